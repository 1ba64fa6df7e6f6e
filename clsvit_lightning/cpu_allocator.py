"""Keep freed CPU memory for reuse: what CUDA's caching allocator does for GPU tensors.

PyTorch's CPU allocator calls ``malloc``/``free`` for every tensor. glibc serves a block above its
mmap threshold (128 KiB at first, raised to the size of freed mapped blocks) with a fresh ``mmap``
that ``free`` unmaps, and gives free memory at the heap top back to the kernel beyond the trim
threshold (128 KiB at first, then twice the mmap threshold). A step that allocates the same
activations as the one before then faults them in again, 4 KiB page by page, each page zeroed by
the kernel. On the development machine, ViT-S/16 at batch 16 took 35-46 thousand minor faults per
forward run alone (7-11 % of its time) and 19-22 thousand per train step (about 2 %);
``experiments/benchmarks/backbone.py`` prints the faults per call, with this setting or without it.

Fixing both thresholds makes ``malloc`` keep and reuse freed blocks up to 32 MiB, the largest mmap
threshold glibc accepts on 64-bit systems (larger tensors are still mapped afresh). What is kept is
what the previous step freed, so the peak resident memory barely moves (+1 % measured); it is just
not handed back to the kernel between steps. PyTorch's CPU tuning guide gets the same from
jemalloc or tcmalloc, which would have to be preloaded into the process.

``clsvit`` applies it at startup, and so do the benchmarks; ``CLSVIT_MALLOC_TUNING=0`` turns it off.
It is a no-op outside glibc (macOS, musl) and under a preloaded allocator (jemalloc, tcmalloc,
mimalloc: ``LD_PRELOAD``), where ``keep_freed_memory`` returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameters from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD_BYTES = 2**30
ENV_SWITCH = "CLSVIT_MALLOC_TUNING"
SWITCH_ON, SWITCH_OFF = frozenset({"1", "true", "on", "yes", ""}), frozenset({"0", "false", "off", "no"})
PRELOADED_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def keep_freed_memory(
    mmap_threshold: int = MMAP_THRESHOLD_BYTES, trim_threshold: int = TRIM_THRESHOLD_BYTES, libc: object = None
) -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when glibc accepted both.

    Forked children (data-loader workers) inherit the setting. ``CLSVIT_MALLOC_TUNING=0`` in the
    environment, or an allocator in ``LD_PRELOAD``, leaves ``malloc`` as it is and returns False.
    ``libc``: the C library to configure (default: this process' glibc).
    """
    switch = os.environ.get(ENV_SWITCH, "1").strip().lower()
    if switch not in SWITCH_ON | SWITCH_OFF:
        raise ValueError(f"{ENV_SWITCH}={os.environ[ENV_SWITCH]!r}: expected 1/0, true/false, on/off or yes/no")
    if switch in SWITCH_OFF:
        return False
    if any(name in os.environ.get("LD_PRELOAD", "") for name in PRELOADED_ALLOCATORS):
        return False  # malloc is not glibc's: its mallopt would change nothing that is used
    if libc is None:
        if platform.libc_ver()[0] != "glibc":
            return False
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallopt"):
        return False
    # Both or neither: fixing only the trim threshold turns off glibc's adaptive mmap threshold,
    # and every block above 128 KiB would be mapped afresh, far worse than the default.
    if not libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)):
        return False
    return bool(libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))
