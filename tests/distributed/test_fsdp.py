"""FSDP through Lightning (per-block units, 2 CPU processes, gloo) = DDP, for a DINOv2 step.

Same data and seed under both strategies (``tests/ops/ddp_step.py``'s tiny setup); the FSDP side
gathers its shards before the weights are compared. Runs out of process under torchrun.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributed.fsdp import ShardingStrategy

from clsvit_lightning.distributed.fsdp import BlockFSDPStrategy, block_wrap_policy
from clsvit_lightning.models.block import Block
from tests.distributed.fsdp_step import ACTIVE_CLIP

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(
        [*command, "-m", "tests.distributed.fsdp_step", str(out)], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {path.stem: torch.load(path, weights_only=True) for path in out.glob("*.pt")}


def assert_same_step(result, reference):
    torch.testing.assert_close(result["loss"], reference["loss"], rtol=1e-5, atol=1e-6)
    assert result["state"].keys() == reference["state"].keys()  # no FSDP prefixes in the keys
    for name, value in reference["state"].items():
        torch.testing.assert_close(result["state"][name], value, rtol=1e-5, atol=1e-5, msg=name)


def test_fsdp_wraps_each_block_and_each_head(runs):
    # Root + 2 student blocks + 2 teacher blocks + student and teacher DINO heads.
    assert runs["fsdp"]["units"] == 7
    assert runs["fsdp"]["wrapped"] == ["Block", "DINOHead"]
    assert runs["ddp"]["units"] == 0


def test_one_fsdp_step_matches_ddp(runs):
    # Student step, EMA teacher and Sinkhorn targets; clipping at norm 3 is active (norm ~37).
    assert runs["ddp"]["grad_norm"] > 3.0
    torch.testing.assert_close(runs["fsdp"]["grad_norm"], runs["ddp"]["grad_norm"], rtol=1e-5, atol=0)
    assert_same_step(runs["fsdp"], runs["ddp"])


def test_fsdp_with_activation_checkpointing_matches_ddp(runs):
    assert_same_step(runs["fsdp_checkpointing"], runs["ddp"])


def test_shard_aware_clipping_under_fsdp_matches_ddp(runs):
    torch.testing.assert_close(runs["ddp_clipped"]["clipped_grad_norm"], torch.tensor(ACTIVE_CLIP), rtol=1e-5, atol=0)
    torch.testing.assert_close(
        runs["fsdp_clipped_sharded"]["clipped_grad_norm"], runs["ddp_clipped"]["clipped_grad_norm"], rtol=1e-5, atol=0
    )
    assert_same_step(runs["fsdp_clipped_sharded"], runs["ddp_clipped"])


def test_task_clipping_under_fsdp_clips_to_the_global_norm(runs):
    torch.testing.assert_close(
        runs["fsdp_clipped_task"]["clipped_grad_norm"], runs["ddp_clipped"]["clipped_grad_norm"], rtol=1e-5, atol=0
    )


def test_a_dinov3_architecture_under_fsdp_matches_ddp(runs):
    # RoPE's periods sit in the replicated root, the key-bias mask in each block's unit; the
    # coordinate rescaling is drawn per block from the same seeded stream under both strategies.
    assert runs["fsdp_dinov3"]["units"] == 7
    assert any(name.endswith("rope_embed.periods") for name in runs["fsdp_dinov3"]["state"])
    torch.testing.assert_close(runs["fsdp_dinov3"]["grad_norm"], runs["ddp_dinov3"]["grad_norm"], rtol=1e-5, atol=0)
    assert not any(name.endswith("pos_embed") for name in runs["fsdp_dinov3"]["state"])
    assert runs["ddp_dinov3"]["grad_norm"] > 0
    assert_same_step(runs["fsdp_dinov3"], runs["ddp_dinov3"])


def test_block_strategy_shards_the_units_and_replicates_the_root():
    strategy = BlockFSDPStrategy(sharding_strategy="SHARD_GRAD_OP", activation_checkpointing=True)
    assert strategy.sharding_strategy.name == "NO_SHARD"  # the root: a few MB, replicated
    assert strategy.kwargs["auto_wrap_policy"] is not None
    unit_kwargs = block_wrap_policy("full_shard")._lambda_fn
    assert unit_kwargs(Block(8, 2)) == {"sharding_strategy": ShardingStrategy.FULL_SHARD}
    assert unit_kwargs(torch.nn.Linear(2, 2)) is False
