"""Mixup and CutMix on one-hot targets, one mixing coefficient per batch (timm's ``Mixup``, batch mode).

The partner of image ``i`` is image ``B - 1 - i`` (the batch flipped), as in timm.

* Mixup (Zhang et al. 2018): ``x = lam * x + (1 - lam) * x_flip`` with ``lam ~ Beta(a, a)``.
* CutMix (Yun et al. 2019): a box of area about ``(1 - lam) * H * W`` (centre uniform, clipped at
  the border) is pasted from ``x_flip``; ``lam`` is then recomputed as the area actually kept,
  ``lam = 1 - box_area / (H * W)``, so the label mass follows the pixels.
* Targets in both cases: ``y = lam * onehot(label) + (1 - lam) * onehot(label_flip)``; each row sums to 1.

DeiT III (Touvron et al. 2022, Table 1) uses mixup 0.8 and cutmix 1.0, one of the two per batch
(switch probability 0.5). Written here because torchvision (whose ``v2.MixUp``/``v2.CutMix`` would
do) cannot be installed in this project's environment, and timm is not a dependency.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def one_hot_targets(labels: Tensor, num_classes: int, label_smoothing: float = 0.0) -> Tensor:
    """``[B] -> [B, C]`` float targets: ``1 - s + s / C`` on the label, ``s / C`` elsewhere."""
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape [B], got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        found = f"{int(labels.min())}..{int(labels.max())}"
        raise ValueError(f"labels must lie in [0, {num_classes - 1}] (num_classes={num_classes}), got {found}")
    off_value = label_smoothing / num_classes
    return F.one_hot(labels, num_classes).float() * (1.0 - label_smoothing) + off_value


def mixup(images: Tensor, targets: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """Blend every image with its flipped-batch partner: ``lam * x + (1 - lam) * x.flip(0)``."""
    mixed = images * lam + images.flip(0) * (1.0 - lam)
    return mixed, targets * lam + targets.flip(0) * (1.0 - lam)


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of a box with sides ``sqrt(1 - lam)`` of the image, clipped at the border."""
    cut_ratio = math.sqrt(1.0 - lam)
    cut_height, cut_width = int(height * cut_ratio), int(width * cut_ratio)
    center_y = int(torch.randint(0, height, ()))
    center_x = int(torch.randint(0, width, ()))
    top, bottom = max(center_y - cut_height // 2, 0), min(center_y + cut_height // 2, height)
    left, right = max(center_x - cut_width // 2, 0), min(center_x + cut_width // 2, width)
    return top, bottom, left, right


def cutmix(images: Tensor, targets: Tensor, box: tuple[int, int, int, int]) -> tuple[Tensor, Tensor, float]:
    """Paste ``box`` of the flipped batch into each image; returns images, targets and the kept area ``lam``."""
    top, bottom, left, right = box
    height, width = images.shape[-2:]
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = images.flip(0)[..., top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    return mixed, targets * lam + targets.flip(0) * (1.0 - lam), lam


class MixupCutmix:
    """Per batch: with ``probability``, mixup or cutmix (cutmix with ``switch_probability`` when both are on).

    ``alpha = 0`` turns a method off. Randomness comes from the global torch RNG (seeded by
    ``seed_everything``; the pretraining tasks restore it on resume).
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        probability: float = 1.0,
        switch_probability: float = 0.5,
        label_smoothing: float = 0.0,
    ) -> None:
        for name, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (0 disables it), got {value}")
        for name, value in (("mix probability", probability), ("switch_probability", switch_probability)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.probability, self.switch_probability = probability, switch_probability

    @property
    def enabled(self) -> bool:
        return self.probability > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``images [B, 3, H, W]``, ``labels [B]`` -> mixed images, soft targets ``[B, C]`` (rows sum to 1)."""
        targets = one_hot_targets(labels, self.num_classes, self.label_smoothing).to(images.dtype)
        if not self.enabled or float(torch.rand(())) >= self.probability:
            return images, targets
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha == 0 or float(torch.rand(())) < self.switch_probability
        )
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        if not use_cutmix:
            return mixup(images, targets, lam)
        box = cutmix_box(images.shape[-2], images.shape[-1], lam)
        mixed, targets, _ = cutmix(images, targets, box)
        return mixed, targets
