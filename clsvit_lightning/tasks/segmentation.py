"""Semantic segmentation on ViT patch features: linear probe, multi-layer ("+ms") probe, finetuning.

The DINOv2 ADE20K protocol (``dinov2/eval/segmentation/``; configs/dense/ade20k_linear.yaml;
docs/protocols.md#ade20k-linear-segmentation):

* ``linear``: frozen backbone (eval mode), ``BatchNorm + 1x1 conv`` on the final-normed patch tokens
  of the last block; ``multilayer``: the same head on the last 4 blocks concatenated (no [CLS], as
  DINOv2's released "+ms" heads: ``conv_seg`` is ``[K, 4D]``); ``finetune``: the last block with the
  backbone trained too, with layer-wise lr decay.
* Logits are upsampled bilinearly to the label size; cross-entropy ignores 255 and, as mmseg's
  ``avg_non_ignore=False``, divides by all pixels: ``L = sum_{p not ignored} CE_p / #pixels``.
* AdamW (lr 1e-3, wd 1e-4), 1500 warmup steps then linear decay to 0 over ``trainer.max_steps``.
* Evaluation on the full image, whole or by sliding window (crop 512, stride 341), optional flip
  and multi-scale TTA; mIoU over the whole set (``evaluation/segmentation_metrics.py``), exact
  under DDP (the samples DistributedSampler repeats are masked out).

The backbone weights come from ``pretrained`` (a pretraining checkpoint of this project: its
teacher; an exported backbone; DINOv2/timm weights), not from ``--ckpt_path``, which would also
restore the old run's hyper-parameters.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from clsvit_lightning.evaluation.segmentation_metrics import (
    IGNORE_INDEX,
    SegmentationMetrics,
    format_per_class_table,
    per_class_rows,
    write_per_class_csv,
)
from clsvit_lightning.evaluation.sliding_window import tta_inference
from clsvit_lightning.models.heads import BNConvHead, DenseFeatures, DensePredictor, last_blocks
from clsvit_lightning.models.vision_transformer import VisionTransformer
from clsvit_lightning.tasks.common import counted_samples
from clsvit_lightning.tasks.dense_base import DenseTask

MODES = ("linear", "multilayer", "finetune")
MULTILAYER_BLOCKS = 4


class SemanticSegmentation(DenseTask):
    """Per-pixel classification into ``num_classes`` (``255`` = ignored) from a ViT backbone."""

    def __init__(
        self,
        backbone: VisionTransformer,
        num_classes: int,
        pretrained: str | None = None,
        mode: Literal["linear", "multilayer", "finetune"] = "linear",
        class_names: list[str] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 1500,
        warmup_ratio: float = 1e-6,
        layerwise_decay: float = 1.0,
        inference: Literal["whole", "slide"] = "slide",
        crop_size: int = 512,
        stride: int = 341,
        tta_scales: tuple[float, ...] = (1.0,),
        tta_flip: bool = False,
        test_short_side: int | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        """
        Args:
            backbone: the ViT (its architecture must match ``pretrained``).
            num_classes: classes scored (ADE20K 150, VOC 21, Cityscapes 19).
            pretrained: weights for the backbone: a pretraining Lightning checkpoint (teacher), an
                exported backbone file, or a DINOv2/timm state dict; None keeps the initial weights.
            mode: ``linear`` (frozen, last block), ``multilayer`` (frozen, last 4 blocks), ``finetune``.
            class_names: names for the per-class table (default: class ids).
            lr: peak AdamW learning rate (after warmup), multiplied by ``layerwise_decay`` powers in the backbone.
            weight_decay: AdamW weight decay; none on norm parameters, biases and LayerScale, while the
                [CLS], register and position embeddings are decayed (``build_param_groups``).
            adamw_betas: AdamW betas.
            warmup_steps: linear warmup steps from ``warmup_ratio * lr``.
            warmup_ratio: lr multiplier at step 0.
            layerwise_decay: block ``i`` of ``L`` gets ``lr * decay ** (L - i)`` (finetune only).
            inference: ``whole`` image or ``slide`` (sliding window) at evaluation.
            crop_size: sliding-window size in pixels.
            stride: sliding-window step in pixels (overlapping logits are averaged).
            tta_scales: test-time scales (probabilities averaged); ``[1.0]`` = none.
            tta_flip: also average the horizontally flipped image.
            test_short_side: resize evaluation images to this short side (times each TTA scale) before
                inference, as mmseg's test ``img_scale``; predictions come back at the label size.
            ignore_index: label of pixels that count neither in the loss nor in the metrics.
        """
        super().__init__()
        with warnings.catch_warnings():  # the module is replaced by its config in _init_backbone
            warnings.filterwarnings("ignore", message="Attribute 'backbone' is an instance of `nn.Module`")
            self.save_hyperparameters()
        if mode not in MODES:
            raise ValueError(f"SemanticSegmentation: mode must be one of {MODES}, got {mode!r}")
        if num_classes < 1:
            raise ValueError(f"SemanticSegmentation: num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"SemanticSegmentation: {len(class_names)} class_names for num_classes={num_classes}")
        if mode == "multilayer" and backbone.depth < MULTILAYER_BLOCKS:
            raise ValueError(
                f"SemanticSegmentation: mode='multilayer' concatenates the last {MULTILAYER_BLOCKS} blocks; "
                f"the backbone has {backbone.depth}"
            )
        self._init_backbone(backbone, pretrained)
        blocks = last_blocks(backbone.depth, MULTILAYER_BLOCKS if mode == "multilayer" else 1)
        features = DenseFeatures(backbone, blocks, concat_cls=False, norm=True, frozen=mode != "finetune")
        self.predictor = DensePredictor(features, BNConvHead(features.out_channels, num_classes))
        # The confusion matrix is the only state; validate_args=False skips a per-batch unique() on labels.
        self.metrics = SegmentationMetrics(num_classes, ignore_index, validate_args=False)

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``[B, K, H, W]`` at the input resolution (one pass, no window)."""
        return self.predictor(images)

    @torch.no_grad()
    def predict_probabilities(self, images: Tensor) -> Tensor:
        """Class probabilities ``[B, K, H, W]`` with the configured inference and TTA."""
        return self._tta(images, "probabilities")

    @torch.no_grad()
    def predict_labels(self, images: Tensor) -> Tensor:
        """Class ids ``[B, H, W]`` with the configured inference and TTA."""
        return self._tta(images, "labels")

    def _tta(self, images: Tensor, output: str) -> Tensor:
        hp = self.hparams
        return tta_inference(
            self.predictor, images, hp.inference, hp.crop_size, hp.stride, hp.tta_scales, hp.tta_flip, output,
            hp.test_short_side,
        )  # fmt: skip

    # ------------------------------------------------------------------ train
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images, masks = batch["image"], batch["mask"]  # [B, 3, H, W], [B, H, W]
        logits = self.predictor(images)  # [B, K, H, W]
        if logits.shape[-2:] != masks.shape[-2:]:
            logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        per_pixel = F.cross_entropy(logits, masks, ignore_index=self.hparams.ignore_index, reduction="none")
        loss = per_pixel.mean()  # ignored pixels contribute 0 but count in the mean (mmseg avg_non_ignore=False)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    # --------------------------------------------------------------- evaluate
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        images, masks = batch["image"], batch["mask"]
        # DistributedSampler repeats: every pixel ignored, so each image counts once.
        counted = counted_samples(self.trainer, batch_idx, len(images), dataloader_idx, masks.device)
        masks = masks.masked_fill(~counted[:, None, None], self.hparams.ignore_index)
        sizes = batch.get("image_size")
        if sizes is None or bool((sizes == torch.tensor(images.shape[-2:], device=sizes.device)).all()):
            self.metrics.update(self.predict_labels(images), masks)
            return
        for image, mask, (height, width) in zip(images, masks, sizes.tolist(), strict=True):
            # Each image at its own size: the batch padding must not become context for the windows.
            labels = self.predict_labels(image[None, :, :height, :width])
            self.metrics.update(labels, mask[None, :height, :width])

    def _end_evaluation(self, stage: str) -> None:
        scores = self.metrics.compute_all()  # synced over ranks
        self.metrics.reset()
        if self.trainer.sanity_checking:
            return
        self.log_dict({f"{stage}/{name}": scores[name].float() for name in ("mIoU", "mAcc", "aAcc")}, prog_bar=True)
        # trainer.log_dir broadcasts from rank 0: every rank must ask for it, not only the one that writes.
        log_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        if self.trainer.is_global_zero:
            self._report_per_class(stage, per_class_rows(scores, self.hparams.class_names), log_dir)

    def _report_per_class(self, stage: str, rows: list[dict[str, Any]], log_dir: Path) -> None:
        """CSV in the log dir, a W&B table when logging to W&B, the text table under ``clsvit validate``."""
        write_per_class_csv(rows, log_dir / "segmentation" / f"{stage}_per_class_step{self.global_step:07d}.csv")
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                columns = list(rows[0])
                logger.log_table(
                    key=f"{stage}/per_class", columns=columns, data=[[r[c] for c in columns] for r in rows]
                )
        if self.trainer.state.fn in ("validate", "test"):
            print(f"\n{stage} per-class scores (%):\n{format_per_class_table(rows)}")
