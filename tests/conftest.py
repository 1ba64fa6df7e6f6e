import os
import sys
import tempfile

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
# Inductor's on-disk cache does not key its C++ kernels on ATEN_CPU_CAPABILITY: kernels built for
# AVX-512 and then loaded under `ATEN_CPU_CAPABILITY=avx2` (or the reverse) gave NaN and corrupted
# the heap. `.ci/run` runs the suite at two capabilities, so each one gets its own cache.
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"clsvit_inductor_{os.environ.get('ATEN_CPU_CAPABILITY') or 'native'}"),
)
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _finish_wandb_runs():
    """A W&B run left open by one test would be reused by the next test's WandbLogger."""
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


# Tests that compare two code paths whose rounding depends on the CPU's kernels (compiled/eager,
# bf16/fp32, DDP/one process, FSDP, in-place/out-of-place GELU, sharded/one-process targets, separable/direct
# sliding window, warm start bit for bit). `.ci/run` runs them a second time under
# `ATEN_CPU_CAPABILITY=avx2`, the kernels of a CPU without AVX-512: `pytest -m numerics`.
NUMERICS_MODULES = {
    "tests/models/test_compile.py",
    "tests/speed/test_mixed_precision.py",
    "tests/distributed/test_fsdp.py",
    "tests/ops/test_ddp.py",
    "tests/models/test_specialized_layers.py",
    "tests/models/test_warm_start.py",
    "tests/evaluation/test_sliding_window.py",
    "tests/losses/test_teacher_targets.py",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "numerics: compares code paths whose rounding depends on the CPU")


def pytest_collection_modifyitems(config, items):
    root = config.rootpath
    for item in items:
        if item.path.relative_to(root).as_posix() in NUMERICS_MODULES:
            item.add_marker(pytest.mark.numerics)
