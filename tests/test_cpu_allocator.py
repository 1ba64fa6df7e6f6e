import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from clsvit_lightning import cpu_allocator
from clsvit_lightning.cpu_allocator import (
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    MMAP_THRESHOLD_BYTES,
    TRIM_THRESHOLD_BYTES,
    keep_freed_memory,
)


class FakeLibc:
    def __init__(self, accepts: bool = True) -> None:
        self.calls: list[tuple[int, int]] = []
        self.accepts = accepts

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return int(self.accepts)


def test_sets_the_mmap_threshold_then_the_trim_threshold(monkeypatch):
    monkeypatch.delenv(cpu_allocator.ENV_SWITCH, raising=False)
    libc = FakeLibc()
    assert keep_freed_memory(libc=libc)
    assert libc.calls == [(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)]
    assert MMAP_THRESHOLD_BYTES == 32 * 2**20  # glibc refuses more on 64-bit


@pytest.mark.parametrize("value", ["0", "off", "False"])
def test_the_environment_switch_turns_it_off(monkeypatch, value):
    monkeypatch.setenv(cpu_allocator.ENV_SWITCH, value)
    libc = FakeLibc()
    assert not keep_freed_memory(libc=libc)
    assert libc.calls == []


def test_an_unknown_switch_value_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv(cpu_allocator.ENV_SWITCH, "maybe")
    with pytest.raises(ValueError, match="CLSVIT_MALLOC_TUNING='maybe'"):
        keep_freed_memory(libc=FakeLibc())


def test_a_preloaded_allocator_is_left_alone(monkeypatch):
    monkeypatch.delenv(cpu_allocator.ENV_SWITCH, raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    libc = FakeLibc()
    assert not keep_freed_memory(libc=libc)
    assert libc.calls == []


def test_a_refused_mmap_threshold_leaves_the_trim_threshold_alone(monkeypatch):
    # A fixed trim threshold alone would switch off glibc's adaptive mmap threshold: worse than nothing.
    monkeypatch.delenv(cpu_allocator.ENV_SWITCH, raising=False)
    libc = FakeLibc(accepts=False)
    assert not keep_freed_memory(libc=libc)
    assert libc.calls == [(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)]


def test_a_c_library_without_mallopt_is_left_alone(monkeypatch):
    monkeypatch.delenv(cpu_allocator.ENV_SWITCH, raising=False)
    assert not keep_freed_memory(libc=object())


# A forward pass in miniature: a chain of activations of changing sizes (6-24 MiB), each step
# keeping a 2 MiB tensor for a backward; everything freed at the end. Minor page faults per round
# (12 rounds: the last 8 are the steady state).
PATTERN = """
import resource, torch
from clsvit_lightning.cpu_allocator import keep_freed_memory
tuned = keep_freed_memory()
faults = []
for _ in range(12):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    saved, x = [], torch.empty(2**20).fill_(1.0)
    for i in range(12):
        x = torch.empty(int(1.5 * 2**20 * (1 + i % 4))).fill_(1.0)
        saved.append(torch.empty(2**19).fill_(1.0))
    del saved, x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
print(tuned, *faults)
"""


def run_pattern(tuning: str) -> tuple[bool, list[int]]:
    env = {**os.environ, cpu_allocator.ENV_SWITCH: tuning}
    out = subprocess.run([sys.executable, "-c", PATTERN], env=env, capture_output=True, text=True, check=True)
    tuned, *faults = out.stdout.split()
    return tuned == "True", [int(f) for f in faults]


def glibc_defaults_in_use() -> bool:
    """glibc's malloc with its default thresholds, faulting in 4 KiB pages (no THP on every heap)."""
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return (
        platform.libc_ver()[0] == "glibc"
        and not os.environ.get("LD_PRELOAD")
        and not os.environ.get("GLIBC_TUNABLES")
        and not any(key.startswith("MALLOC_") for key in os.environ)
        and not (thp.exists() and "[always]" in thp.read_text())
    )


@pytest.mark.skipif(not glibc_defaults_in_use(), reason="glibc's malloc, default settings, 4 KiB page faults")
def test_freed_tensors_are_reused_without_page_faults():
    tuned, faults = run_pattern("1")
    assert tuned
    # Once the heap has grown to the peak (4 rounds), every block is a reused one. One round in four
    # may still fault a 2 MiB range in again (512 pages) when the kernel reclaims under a loaded
    # machine's memory pressure.
    steady = faults[-8:]
    assert sum(f < 256 for f in steady) >= 6, faults
    default, default_faults = run_pattern("0")
    assert not default
    # glibc's defaults unmap and trim, and fault the memory in again. How often depends on where its
    # adaptive thresholds settle and on what small block happens to sit at the heap top (every round
    # on one machine, one round in three on another), so the contrast is a total over the rounds:
    # at least 16 MiB more faulted in than with the tuning.
    assert sum(default_faults[-8:]) >= 4096 + sum(steady), (default_faults, faults)


def test_the_clsvit_command_tunes_malloc_before_it_runs(monkeypatch):
    from clsvit_lightning import cli

    events = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: events.append("malloc"))
    monkeypatch.setattr(cli, "run", lambda args: events.append(("run", args)))
    cli.main(["summary"])
    assert events == ["malloc", ("run", ["summary"])]


def test_the_clsvit_command_reports_a_bad_switch_value_without_a_traceback(monkeypatch):
    from clsvit_lightning import cli

    monkeypatch.setenv(cpu_allocator.ENV_SWITCH, "maybe")
    monkeypatch.setattr(cli, "run", lambda args: pytest.fail("ran despite the bad setting"))
    with pytest.raises(SystemExit, match="clsvit: CLSVIT_MALLOC_TUNING='maybe'"):
        cli.main(["summary"])
