"""The benchmark scripts run end to end on a tiny model and print their JSON (figures not checked)."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[2] / "experiments" / "benchmarks"


def run_benchmark(script: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(out.stdout)


def test_backbone_benchmark_reports_ratios_and_the_kernel_bound():
    result = run_benchmark("backbone.py", "--size", "tiny", "--img_size", "64", "--batch_size", "2", "--rounds", "1")
    assert result["malloc_tuning"] in (True, False)
    # Timings of one round on a shared machine: only their presence and sign are checked.
    for key in ("forward_flops_vs_matmul", "forward_flops_vs_matmul_alone_best", "kernel_bound_flops_vs_matmul"):
        assert result[key] > 0
    assert result["forward_time_outside_counted_kernels"] < 1
    assert set(result["targets"]) >= {"time_ratio_forward<=1.02", "time_ratio_train_step<=1.02"}


def test_compile_precision_benchmark_runs():
    # Eager only: compiling is covered by tests/models/test_compile.py, and takes a minute here.
    result = run_benchmark(
        "compile_precision.py", "--size", "tiny", "--img_size", "32", "--batch_size", "2", "--rounds", "1",
        "--memory_batch_size", "2", "--modes", "eager,eager_checkpointing",
    )  # fmt: skip
    assert set(result["forward_flops_vs_matmul"]) == {"vanilla_eager", "specialized_eager"}
    assert result["working_memory_ratio_specialized_vs_vanilla"]["plain"] > 0


def test_stochastic_depth_benchmark_runs():
    result = run_benchmark(
        "stochastic_depth.py", "--size", "tiny", "--img_size", "32", "--batch_size", "4", "--rounds", "1"
    )
    assert result["blocks_work_fraction_dinov2"] == 0.5  # int(4 * 0.6) = 2 of 4 samples
    assert result["speedup_dinov2_vs_per_sample"] > 0
