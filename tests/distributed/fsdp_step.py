"""One DINOv2 optimizer step with 2 CPU processes (gloo), under DDP and under per-block FSDP.

Run under ``torchrun --standalone --nproc_per_node=2 -m tests.distributed.fsdp_step OUT [RUN ...]``;
rank 0 writes ``{run}.pt`` with the global loss, the gradient norm of the student backbone (before
and after clipping) and the full (gathered) state dict after the step. Runs (``RUNS``): DDP and
FSDP with the recipe's clipping to norm 3 (FSDP also with per-block activation checkpointing);
clipping to 1e-3 under DDP, under FSDP with the task's own ``nn.utils.clip_grad_norm_``, and
under FSDP with the shard-aware ``distributed.fsdp.clip_grad_norm_``; and DDP and FSDP on a DINOv3
architecture (RoPE and its coordinate augmentation, storage tokens, key-bias mask, SwiGLU).
"""

import sys
import types
from contextlib import nullcontext
from pathlib import Path

import torch
from lightning.pytorch import Trainer
from torch.distributed.fsdp import FullyShardedDataParallel

from clsvit_lightning.distributed.fsdp import BlockFSDPStrategy, clip_grad_norm_, sharded_parameter_ids
from tests.ops.ddp_step import GLOBAL_BATCH, FixedData, Record, tiny_module

ACTIVE_CLIP = 1e-3
# DINOv3's architecture in miniature: RoPE with the recipe's coordinate rescaling (drawn per block in
# training), 4 storage tokens, the key-bias mask buffer, SwiGLU, LayerNorm eps 1e-5.
DINOV3 = dict(
    position_encoding="rope", rope_rescale_coords=2.0, num_registers=4, mask_k_bias=True, ffn_layer="swiglu",
    norm_eps=1e-5,
)  # fmt: skip
# run -> (strategy, clip_grad, shard-aware clipping, backbone options)
RUNS = {
    "ddp": ("ddp", 3.0, False, {}),
    "fsdp": ("fsdp", 3.0, False, {}),
    "fsdp_checkpointing": ("fsdp_checkpointing", 3.0, False, {}),
    "ddp_clipped": ("ddp", ACTIVE_CLIP, False, {}),
    "fsdp_clipped_task": ("fsdp", ACTIVE_CLIP, False, {}),
    "fsdp_clipped_sharded": ("fsdp", ACTIVE_CLIP, True, {}),
    "ddp_dinov3": ("ddp", 3.0, False, DINOV3),
    "fsdp_dinov3": ("fsdp", 3.0, False, DINOV3),
}


def shard_aware_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
    """The task's per-module clipping, with the global norm of sharded gradients."""
    sharded = sharded_parameter_ids(self.trainer.model)
    for module in self.student.values():
        clip_grad_norm_(module.parameters(), self.hparams.clip_grad, sharded)


class GradNorm(Record):
    """Global gradient norm of the student backbone before and after clipping."""

    def backbone_grad_norm(self, trainer, pl_module):
        params = pl_module.student["backbone"].parameters()
        return clip_grad_norm_(params, float("inf"), sharded_parameter_ids(trainer.model))  # measures only

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # before Lightning clips
        self.grad_norm = self.backbone_grad_norm(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.clipped_grad_norm = self.backbone_grad_norm(trainer, pl_module)  # the step leaves .grad


def one_step(out: Path, run: str, targets: str = "sinkhorn_knopp") -> None:
    strategy_name, clip, shard_aware, backbone_options = RUNS[run]
    module, record = tiny_module(targets, **backbone_options), GradNorm()
    module.hparams.clip_grad = clip
    if shard_aware:
        module.configure_gradient_clipping = types.MethodType(shard_aware_clipping, module)
    strategy = "ddp"
    if strategy_name.startswith("fsdp"):
        strategy = BlockFSDPStrategy(activation_checkpointing=strategy_name == "fsdp_checkpointing")
    trainer = Trainer(
        accelerator="cpu", devices=2, strategy=strategy, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[record],
    )  # fmt: skip
    trainer.fit(module, FixedData(GLOBAL_BATCH // 2))
    assert trainer.global_step == 1
    units = [m for m in trainer.model.modules() if isinstance(m, FullyShardedDataParallel)]
    # Full tensors (FSDP gathers the shards; DDP's are replicas).
    gather = FullyShardedDataParallel.summon_full_params(trainer.model) if units else nullcontext()
    with gather:
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    if trainer.is_global_zero:
        wrapped = sorted({type(m.module).__name__ for m in units if m is not trainer.model})
        torch.save(
            {"loss": record.loss, "grad_norm": record.grad_norm, "clipped_grad_norm": record.clipped_grad_norm,
             "state": state, "units": len(units), "wrapped": wrapped},
            out / f"{run}.pt",
        )  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(1)
    for run in sys.argv[2:] or RUNS:
        one_step(Path(sys.argv[1]), run)
