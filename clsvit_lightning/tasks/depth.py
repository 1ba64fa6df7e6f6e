"""Monocular depth on frozen ViT features: DINOv2's linear depth probe (NYUv2; ``dinov2/eval/depth/``,
``dinov2/hub/depthers.py``; docs/protocols.md#nyuv2-depth).

Features: the un-normed outputs of the last block (``linear``) or of 4 evenly spaced blocks
(``multilayer``, ViT-S/B: ``[2, 5, 8, 11]``), each with its [CLS] token broadcast beside the
patches (``2D`` channels per block). Head: ×4 bilinear upsampling, 1x1 conv to 256 uniform depth
bins in ``[min_depth, max_depth]``, depth = bin-weighted mean (or direct regression). Loss: the
scale-invariant log loss over valid pixels (:func:`scale_invariant_log_loss`). Evaluation on the
full frame, optional flip averaging; predictions clamped to ``[min_depth, max_depth]``; RMSE,
AbsRel, delta1... over the valid pixels, which the DataModule restricts to the Eigen crop.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor

from clsvit_lightning.evaluation.depth_metrics import DepthMetrics
from clsvit_lightning.evaluation.sliding_window import tta_inference
from clsvit_lightning.models.heads import (
    DenseFeatures,
    DensePredictor,
    DepthBinsHead,
    depth_probe_blocks,
    last_blocks,
)
from clsvit_lightning.models.vision_transformer import VisionTransformer
from clsvit_lightning.tasks.common import counted_samples
from clsvit_lightning.tasks.dense_base import DenseTask

MULTILAYER_BLOCKS = 4


def scale_invariant_log_loss(
    preds: Tensor, target: Tensor, valid: Tensor, variance_focus: float = 0.85, eps: float = 1e-3
) -> Tensor:
    """SigLoss (Eigen et al. 2014, as in the depth toolbox): ``sqrt(Var(g) + (1 - lambda) * mean(g)^2)``.

    ``g = log(d + eps) - log(t + eps)`` over the valid pixels of the whole batch; ``Var`` is the
    unbiased variance as in the toolbox; ``lambda = variance_focus = 0.85``. Zero if no pixel is valid.
    """
    valid = valid & (target > 0)
    if valid.sum() < 2:
        return preds.sum() * 0.0  # keeps the graph (DDP) without a NaN from an empty variance
    log_diff = torch.log(preds[valid] + eps) - torch.log(target[valid] + eps)  # [P]
    return torch.sqrt(log_diff.var() + (1.0 - variance_focus) * log_diff.mean() ** 2)


class MonocularDepth(DenseTask):
    """Metric depth in metres per pixel from a frozen ViT backbone."""

    def __init__(
        self,
        backbone: VisionTransformer,
        pretrained: str | None = None,
        mode: Literal["linear", "multilayer"] = "linear",
        head: Literal["bins", "regression"] = "bins",
        num_bins: int = 256,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        upsample: int = 4,
        variance_focus: float = 0.85,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 1500,
        warmup_ratio: float = 1e-6,
        tta_flip: bool = False,
        metrics_average: Literal["image", "pixel"] = "image",
    ) -> None:
        """
        Args:
            backbone: the ViT (its architecture must match ``pretrained``).
            pretrained: backbone weights (pretraining checkpoint: teacher; exported backbone; DINOv2/timm).
            mode: ``linear`` (last block) or ``multilayer`` (4 evenly spaced blocks); the backbone is frozen.
            head: ``bins`` (classification into depth bins, DINOv2) or ``regression``.
            num_bins: number of uniform depth bins.
            min_depth: smallest depth in metres (bins start there; predictions are clamped to it).
            max_depth: largest depth in metres (NYUv2: 10).
            upsample: feature upsampling factor before the 1x1 conv.
            variance_focus: lambda of the scale-invariant log loss.
            lr: peak AdamW learning rate.
            weight_decay: AdamW weight decay.
            adamw_betas: AdamW betas.
            warmup_steps: linear warmup steps (then linear decay to 0 over ``trainer.max_steps``).
            warmup_ratio: lr multiplier at step 0.
            tta_flip: average the prediction with that of the flipped image.
            metrics_average: ``image`` (per-image metrics averaged, the toolbox protocol) or ``pixel``.
        """
        super().__init__()
        with warnings.catch_warnings():  # the module is replaced by its config in _init_backbone
            warnings.filterwarnings("ignore", message="Attribute 'backbone' is an instance of `nn.Module`")
            self.save_hyperparameters()
        if mode not in ("linear", "multilayer"):
            raise ValueError(f"MonocularDepth: mode must be 'linear' or 'multilayer', got {mode!r}")
        if mode == "multilayer" and backbone.depth < MULTILAYER_BLOCKS:
            raise ValueError(
                f"MonocularDepth: mode='multilayer' uses {MULTILAYER_BLOCKS} blocks; the backbone has {backbone.depth}"
            )
        self._init_backbone(backbone, pretrained)
        depth = backbone.depth
        blocks = depth_probe_blocks(depth, MULTILAYER_BLOCKS) if mode == "multilayer" else last_blocks(depth, 1)
        features = DenseFeatures(backbone, blocks, concat_cls=True, norm=False, frozen=True)
        depth_head = DepthBinsHead(features.out_channels, head, num_bins, min_depth, max_depth, upsample)
        self.predictor = DensePredictor(features, depth_head)
        self.metrics = DepthMetrics(average=metrics_average)

    def forward(self, images: Tensor) -> Tensor:
        """Depth ``[B, H, W]`` in metres at the input resolution."""
        return self.predictor(images)[:, 0]

    @torch.no_grad()
    def predict_depth(self, images: Tensor) -> Tensor:
        """Evaluation prediction ``[B, H, W]``: optional flip average, clamped to the depth range."""
        hp = self.hparams
        depth = tta_inference(self.predictor, images, "whole", flip=hp.tta_flip, output="values")[:, 0]
        return depth.clamp(hp.min_depth, hp.max_depth)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images, target, valid = batch["image"], batch["depth"], batch["valid"]  # [B, 3, H, W], [B, H, W] x2
        loss = scale_invariant_log_loss(self(images), target, valid, self.hparams.variance_focus)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        images, target, valid = batch["image"], batch["depth"], batch["valid"].bool()
        counted = counted_samples(self.trainer, batch_idx, len(images), dataloader_idx, valid.device)
        valid = valid & counted[:, None, None]  # DistributedSampler repeats: no pixel valid, each image counts once
        self.metrics.update(self.predict_depth(images), target, valid)

    def _end_evaluation(self, stage: str) -> None:
        scores = self.metrics.compute()  # synced over ranks
        self.metrics.reset()
        if not self.trainer.sanity_checking:
            self.log_dict({f"{stage}/{name}": value.float() for name, value in scores.items()}, prog_bar=False)
