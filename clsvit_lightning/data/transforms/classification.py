"""Single-view image pipelines for classification: supervised training, linear-probe training, evaluation.

- ``eval``: resize the short side to ``resize_size`` (256), centre-crop ``crop_size`` (224), bicubic
  (DINOv2 k-NN and linear eval, ``dinov2/eval/{knn,linear}.py``). Every resize antialiases when it shrinks.
- ``linear``: ``RandomResizedCrop(224)`` bicubic + flip 0.5 (DINOv2 linear-probe training, ``dinov2/eval/linear.py``).
- ``supervised``: DeiT-III "3-Augment": ``RandomResizedCrop(224, scale=(0.08, 1))`` + flip, then one
  of grayscale / solarize / Gaussian blur, then colour jitter 0.3 (Touvron et al. 2022, §3.2).

All return ``uint8`` ``[crop, crop, 3]``; :func:`~clsvit_lightning.data.transforms.collate.collate_labelled`
normalises per batch.
"""

from __future__ import annotations

from typing import Literal

import albumentations as A
import cv2

ClassificationPipeline = Literal["eval", "linear", "supervised"]


def classification_transform(pipeline: ClassificationPipeline, crop_size: int = 224, resize_size: int = 256):
    """The named single-view pipeline as one ``A.Compose`` (``image=`` in, ``["image"]`` out)."""
    # Bicubic, and INTER_AREA when shrinking: cv2's cubic does not antialias, PIL's (DINOv2's and
    # DeiT's torchvision) does; without it a 2x downscale aliases fine textures.
    resize = {"interpolation": cv2.INTER_CUBIC, "area_for_downscale": "image"}
    if pipeline == "eval":
        transforms = [A.SmallestMaxSize(max_size=resize_size, **resize), A.CenterCrop(crop_size, crop_size)]
    elif pipeline == "linear":
        transforms = [A.RandomResizedCrop((crop_size, crop_size), **resize), A.HorizontalFlip(p=0.5)]
    elif pipeline == "supervised":
        transforms = [
            A.RandomResizedCrop((crop_size, crop_size), scale=(0.08, 1.0), **resize),
            A.HorizontalFlip(p=0.5),
            A.OneOf(
                [
                    A.ToGray(num_output_channels=3, p=1.0),
                    A.Solarize(threshold_range=(0.5, 0.5), p=1.0),
                    A.GaussianBlur(blur_limit=(9, 9), sigma_limit=(0.1, 2.0), p=1.0),
                ],
                p=1.0,
            ),
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.0, p=1.0),
        ]
    else:
        raise ValueError(f"classification pipeline={pipeline!r}; expected 'eval', 'linear' or 'supervised'")
    return A.Compose(transforms, strict=False)
