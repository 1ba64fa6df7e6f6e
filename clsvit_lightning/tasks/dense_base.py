"""What the dense LightningModules share: pretrained backbone, optimizer and lr schedule, DDP-exact evaluation.

Schedule (mmseg ``poly`` with linear warmup, the DINOv2 linear-probe protocol): for step ``t`` of ``T``,
``lr(t) = lr * (1 - t / T) ** power`` (``power = 1``: linear decay to 0), multiplied during the first
``W`` warmup steps by ``1 - (1 - t / W) * (1 - warmup_ratio)`` (from ``warmup_ratio`` up to 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

from clsvit_lightning.callbacks.resumable_loader import ResumableTrainLoader
from clsvit_lightning.errors import check_option_values
from clsvit_lightning.models.checkpoint import load_pretrained
from clsvit_lightning.models.vision_transformer import VisionTransformer
from clsvit_lightning.tasks.knn_evaluation import warn_random_backbone
from clsvit_lightning.training.param_groups import build_param_groups
from clsvit_lightning.training.schedules import value_at


def warmup_poly_schedule(
    total_steps: int, warmup_steps: int = 0, warmup_ratio: float = 1e-6, power: float = 1.0
) -> np.ndarray:
    """The lr multiplier for every step ``[T]`` (see the module docstring; 1.0 = the base lr)."""
    if total_steps < 1:
        raise ValueError(f"the lr schedule needs total_steps >= 1, got {total_steps} (set trainer.max_steps)")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in 0..{total_steps} (the total steps), got {warmup_steps}")
    steps = np.arange(total_steps, dtype=np.float64)
    multiplier = (1.0 - steps / total_steps) ** power
    if warmup_steps:
        warm = steps[:warmup_steps]
        multiplier[:warmup_steps] *= 1.0 - (1.0 - warm / warmup_steps) * (1.0 - warmup_ratio)
    return multiplier


def distributed_padding_mask(positions: Tensor, num_samples: int, num_replicas: int, rank: int) -> Tensor:
    """True for the samples a ``DistributedSampler(drop_last=False)`` repeats to even out the ranks.

    The sampler pads its index list to ``ceil(N / W) * W`` by repeating its head and gives rank ``r``
    the entries ``r, r + W, r + 2W, ...``; the ``i``-th sample of rank ``r`` is a repeat iff
    ``r + i * W >= N``. Masking those keeps dataset-level metrics exact under DDP.
    """
    return rank + positions * num_replicas >= num_samples


class DenseTask(LightningModule):
    """Base of :class:`SemanticSegmentation` and :class:`MonocularDepth` (needs ``self.hparams`` with
    ``lr, weight_decay, adamw_betas, warmup_steps, warmup_ratio``, optionally ``layerwise_decay``, and
    ``self.predictor``)."""

    predictor: nn.Module

    def _init_backbone(self, backbone: VisionTransformer, pretrained: str | None) -> None:
        """Check the optimizer options; load ``pretrained`` (pretraining checkpoint: teacher; exported backbone;
        DINOv2/timm weights)."""
        check_option_values(type(self).__name__, self.hparams, positive=("lr",), non_negative=("weight_decay",))
        if isinstance(self.hparams.get("backbone"), nn.Module):
            # Outside the CLI the hyper-parameters would hold the module itself, which a weights-only
            # checkpoint cannot store; keep its config instead (under the CLI they are the parsed config).
            self.hparams["backbone"] = {
                "class_path": "clsvit_lightning.models.VisionTransformer",
                "init_args": dict(backbone.config),
            }
        if not pretrained and self.hparams.get("mode") != "finetune":  # a probe of frozen features
            warn_random_backbone(type(self).__name__)
        if pretrained:
            report = load_pretrained(backbone, pretrained)
            rank_zero_info(
                f"{type(self).__name__}: loaded {report.source} (warm-started {len(report.warm_started)} specialized "
                f"parameters, dropped {len(report.dropped)} non-backbone keys)"
            )

    @property
    def backbone(self) -> VisionTransformer:
        return self.predictor.features.backbone

    # ------------------------------------------------------------ optimization
    def configure_callbacks(self) -> list[Callback]:
        return [ResumableTrainLoader()]  # exact resume, mid-epoch included, whatever the checkpoint callback

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        modules = {"head": self.predictor.head}
        if not self.predictor.features.frozen:
            modules["backbone"] = self.backbone  # layer-wise lr decay applies to the backbone only
        groups = build_param_groups(modules, layerwise_decay=hp.get("layerwise_decay", 1.0))
        for group in groups:
            group.pop("names")
        return torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.adamw_betas))

    def setup(self, stage: str) -> None:
        if stage == "fit":
            total = int(self.trainer.estimated_stepping_batches)
            self.lr_schedule = warmup_poly_schedule(
                total, min(self.hparams.warmup_steps, total), self.hparams.warmup_ratio
            )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        lr = self.hparams.lr * value_at(self.lr_schedule, self.global_step)
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = lr * group["lr_multiplier"]
            group["weight_decay"] = self.hparams.weight_decay * group["wd_multiplier"]
        self.log("train/lr", lr, batch_size=1)

    # --------------------------------------------------------------- evaluation
    def padded_samples(self, batch_idx: int, batch_size: int, dataloader_idx: int = 0) -> Tensor | None:
        """``[B]`` bool: which samples of this validation batch are DistributedSampler repeats (None: none)."""
        loaders = self.trainer.test_dataloaders if self.trainer.testing else self.trainer.val_dataloaders
        loader = loaders[dataloader_idx] if isinstance(loaders, (list, tuple)) else loaders
        sampler = getattr(loader, "sampler", None)
        if not isinstance(sampler, DistributedSampler) or sampler.drop_last or loader.batch_size is None:
            return None
        positions = torch.arange(batch_size) + batch_idx * loader.batch_size
        mask = distributed_padding_mask(positions, len(sampler.dataset), sampler.num_replicas, sampler.rank)
        return mask if mask.any() else None

    # Validation and test share one evaluation; each task defines `validation_step` and `_end_evaluation`.
    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.validation_step(batch, batch_idx, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._end_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._end_evaluation("test")

    def _end_evaluation(self, stage: str) -> None:
        raise NotImplementedError
