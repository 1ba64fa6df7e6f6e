"""What the dense LightningModules share: pretrained backbone, AdamW with a warmup-poly lr, DDP-exact evaluation.

The lr of step ``t`` is ``lr * warmup_poly_schedule(T, warmup_steps, warmup_ratio)[t]`` (mmseg's
``poly`` with linear warmup, the DINOv2 linear-probe protocol; ``training/schedules.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback
from torch import Tensor, nn

from clsvit_lightning.callbacks.resumable_loader import ResumableTrainLoader
from clsvit_lightning.errors import check_option_values
from clsvit_lightning.models.vision_transformer import VisionTransformer
from clsvit_lightning.tasks.common import BackboneTask, load_backbone_weights
from clsvit_lightning.training.param_groups import build_param_groups
from clsvit_lightning.training.schedules import value_at, warmup_poly_schedule


class DenseTask(BackboneTask):
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
        frozen_probe = self.hparams.get("mode") != "finetune"  # random features are worth a warning
        load_backbone_weights(backbone, pretrained, type(self).__name__, warn_if_random=frozen_probe)

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
    # Validation and test share one evaluation; each task defines `validation_step` and `_end_evaluation`.
    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.validation_step(batch, batch_idx, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._end_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._end_evaluation("test")

    def _end_evaluation(self, stage: str) -> None:
        raise NotImplementedError
