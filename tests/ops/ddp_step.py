"""One DINOv2 optimizer step on fixed data, recorded for the DDP-equivalence test.

Run under ``torchrun --standalone --nproc_per_node=2 -m tests.ops.ddp_step OUT`` (each rank gets
``GLOBAL_BATCH / 2`` samples) or in-process with ``one_step(OUT, devices=1)`` (all samples in one
batch). torchrun rather than Lightning's own ``ddp`` launcher: it creates the processes itself,
so one invocation can run several ``fit`` calls (one per teacher-target method).
"""

import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from torch.utils.data import DataLoader

from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining
from tests.tasks.tiny_ssl_data import RandomMultiCrop, collate

GLOBAL_BATCH = 8
TARGETS = ("sinkhorn_knopp", "centering")


class FixedData(LightningDataModule):
    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        # Sequential: under DDP Lightning's DistributedSampler splits it into disjoint halves.
        dataset = RandomMultiCrop(GLOBAL_BATCH, num_local=2, seed=3)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, collate_fn=collate)


class Record(Callback):
    """Averaged gradients before the step, the global loss and the weights after the step."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        params = pl_module.student.named_parameters()
        self.grads = {name: p.grad.detach().clone() for name, p in params if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # Each rank's loss is the mean over its own samples: the global loss is the mean over ranks.
        self.loss = trainer.strategy.reduce(outputs["loss"].detach().clone(), reduce_op="mean")


def tiny_module(targets: str, **backbone_options) -> DINOv2Pretraining:
    """``backbone_options`` replace the tiny ViT's arguments (a DINOv3 architecture, say)."""
    seed_everything(0)
    options = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, specialization="paper")
    backbone = VisionTransformer(**{**options, **backbone_options})
    return DINOv2Pretraining(
        backbone, num_prototypes=64, head_hidden_dim=48, head_bottleneck_dim=16, teacher_targets=targets,
        koleo_loss_weight=0.0,  # KoLeo is per rank (as in DINOv2): not comparable across batch splits
        warmup_epochs=0, warmup_teacher_temperature_epochs=0, freeze_last_layer_epochs=0, base_lr=0.01,
    )  # fmt: skip


def one_step(out: Path, devices: int) -> None:
    for targets in TARGETS:
        module, record = tiny_module(targets), Record()
        trainer = Trainer(
            accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_epochs=1,
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[record],
        )  # fmt: skip
        trainer.fit(module, FixedData(GLOBAL_BATCH // devices))
        assert trainer.global_step == 1
        if trainer.is_global_zero:
            state = {k: v.clone() for k, v in module.state_dict().items()}
            torch.save({"loss": record.loss, "grads": record.grads, "state": state}, out / f"{targets}_{devices}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    one_step(Path(sys.argv[1]), devices=int(sys.argv[2]) if len(sys.argv) > 2 else 2)
