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
