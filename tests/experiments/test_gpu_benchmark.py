"""experiments/benchmarks/gpu.py: its code path at toy size on the CPU, and its exit on a machine without CUDA.

The figures themselves (MFU, ratios) are only meaningful on a GPU; here only their presence, sign
and finiteness are checked. Compiled mode uses dynamo's ``eager`` backend: the blocks are traced
(full graph) and recompiled per crop size and mode as under inductor, without inductor's C++
compilation, which takes minutes on the CPU (tests/models/test_compile.py covers inductor).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "experiments" / "benchmarks" / "gpu.py"
MODELS, MODES, VARIANTS = ("small16", "large14"), ("eager", "compiled"), ("vanilla", "paper")


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, env=env)


def assert_positive(value, what):
    assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, f"{what}: {value!r}"


def test_tiny_cpu_run_reports_every_configuration_and_the_distributed_steps():
    out = run(
        "--device", "cpu", "--tiny", "--modes", "eager,compiled", "--compile_backend", "eager",
        "--peak_tflops", "1",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["benchmark"] == "gpu" and result["tiny"] is True and result["peak_bf16_tflops"] == 1.0
    for key in MODELS:
        model = result["models"][key]
        assert model["batch_size"] == 2 and model["crops"] in ("2x32 + 8x16", "2x28 + 8x14")  # 2 global + 8 local
        for variant in VARIANTS:
            assert_positive(model["flops_per_step"][variant], f"{key} flops")
        assert model["parameters"]["paper"] > model["parameters"]["vanilla"]
        for mode in MODES:
            figures = model["modes"][mode]
            assert "error" not in figures, figures
            assert_positive(figures["time_ratio_paper_vs_vanilla"], f"{key}/{mode} ratio")
            for variant in VARIANTS:
                for name in ("step_s", "images_per_s", "model_tflops", "mfu", "first_step_s"):
                    assert_positive(figures[variant][name], f"{key}/{mode}/{variant}/{name}")
                assert figures[variant]["peak_memory_gib"] is None  # CUDA only
        assert model["modes"]["compiled"]["unique_graphs"] > 0  # the blocks did go through dynamo
        assert set(model["speedup_compiled_vs_eager"]) == set(VARIANTS)
    distributed = result["distributed"]
    assert distributed["model"] == "tiny7" and distributed["specialization"] == "paper"  # last of --models
    for name, strategy in (("ddp", "DDPStrategy"), ("fsdp", "BlockFSDPStrategy")):
        step = distributed[name]
        assert "error" not in step, step
        assert (step["strategy"], step["world_size"], step["backend"]) == (strategy, 1, "gloo")
        for figure in ("step_s", "images_per_s", "mfu"):
            assert_positive(step[figure], f"{name}/{figure}")
    targets = result["targets"]
    expected = {f"{key}/{mode}/time_ratio_paper_vs_vanilla<=1.02" for key in MODELS for mode in MODES}
    expected |= {f"large14/compiled/{variant}/mfu>=0.45" for variant in VARIANTS}
    assert set(targets) == expected | {"time_ratio_paper_vs_vanilla<=1.02 in every mode"}
    assert all(isinstance(value, bool) for value in targets.values())
    assert_positive(result["total_s"], "total_s")


def test_without_cuda_it_says_so_and_exits_0():
    out = run(env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    message = json.loads(out.stdout.strip().splitlines()[-1])
    assert "CUDA is not available" in message["skipped"]
