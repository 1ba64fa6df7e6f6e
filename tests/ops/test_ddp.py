"""DDP with 2 CPU processes (gloo) at batch B per process = one process at batch 2B, for DINOv2.

Sinkhorn-Knopp and centering sum over the global batch (all-reduced), so the teacher targets, the
loss, the averaged gradients and the weights after the step (student, EMA teacher, centers) must
match. KoLeo is off: it is per rank, as in DINOv2. The DDP side runs out of process (torchrun).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.ops.ddp_step import TARGETS, one_step

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(
        [*command, "-m", "tests.ops.ddp_step", str(out), "2"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    one_step(out, devices=1)
    return out


@pytest.mark.parametrize("targets", TARGETS)
def test_one_ddp_step_equals_one_step_at_twice_the_batch(recorded, targets):
    single = torch.load(recorded / f"{targets}_1.pt", weights_only=True)
    ddp = torch.load(recorded / f"{targets}_2.pt", weights_only=True)
    torch.testing.assert_close(ddp["loss"], single["loss"], rtol=1e-5, atol=1e-6)
    assert single["grads"].keys() == ddp["grads"].keys() and len(single["grads"]) > 20
    for name, grad in single["grads"].items():
        scale = grad.abs().max().clamp_min(1e-8)
        torch.testing.assert_close(ddp["grads"][name] / scale, grad / scale, rtol=0, atol=1e-5, msg=name)
    for name, value in single["state"].items():
        torch.testing.assert_close(ddp["state"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    if targets == "centering":  # the centers moved with the global batch statistics
        assert single["state"]["dino_center.center"].abs().sum() > 0
