"""Pipelines for dense tasks: semantic segmentation (image + class mask) and depth (image + depth map).

Segmentation train is the mmseg ADE20K recipe of DINOv2's linear eval (docs/protocols.md): random short-side
rescale ``ratio_range=(0.5, 2.0)`` of ``base_size`` -> random crop (at most the image) with the
``cat_max_ratio`` rule -> flip 0.5 -> photometric distortion -> pad to the crop, bottom and right
(image: the mean colour, i.e. 0 once normalised, as mmseg pads after ``Normalize``; mask: 255).
Validation keeps the full image (for sliding-window inference, the protocol) or resizes its short
side to ``base_size``.

Depth train follows the NYUv2 recipe of the depth toolboxes DINOv2 uses (``dinov2/eval/depth/``): small
rotation (+-2.5 deg, p=0.5), flip 0.5, random crop, brightness/contrast/gamma jitter. There is no
rescale: scaling the image would change the apparent metric depth.

All pipelines return ``uint8`` images; the collate functions normalise (``transforms/tensors.py``).
"""

from __future__ import annotations

from typing import Literal

import albumentations as A
import cv2

from clsvit_lightning.data.transforms.dense_ops import (
    PhotoMetricDistortion,
    RandomCropCatMaxRatio,
    RandomShortSideScale,
)
from clsvit_lightning.data.transforms.tensors import IMAGENET_MEAN

IGNORE_INDEX = 255
# uint8 RGB closest to the normalisation mean: within 0.01 of 0 once normalised (transforms/tensors.py).
MEAN_COLOUR = tuple(round(255 * m) for m in IMAGENET_MEAN)


def _compose(transforms: list) -> A.Compose:
    return A.Compose(transforms, strict=False)


def segmentation_train_transform(
    crop_size: int = 512,
    base_size: int = 512,
    scale_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    ignore_index: int = IGNORE_INDEX,
) -> A.Compose:
    """``Compose(image=[H, W, 3] uint8, mask=[H, W] uint8)`` -> crops ``[crop, crop, 3]`` and ``[crop, crop]``."""
    return _compose(
        [
            RandomShortSideScale(base_size, scale_range),
            RandomCropCatMaxRatio(crop_size, crop_size, cat_max_ratio=cat_max_ratio, ignore_index=ignore_index),
            A.HorizontalFlip(p=0.5),
            PhotoMetricDistortion(),
            # Last, as mmseg: the padding is neither distorted nor black; it is ignored in the loss.
            A.PadIfNeeded(
                crop_size,
                crop_size,
                position="top_left",
                border_mode=cv2.BORDER_CONSTANT,
                fill=MEAN_COLOUR,
                fill_mask=ignore_index,
            ),
        ]
    )


def segmentation_val_transform(mode: Literal["full", "resize"] = "full", base_size: int = 512) -> A.Compose:
    """``full``: image and mask unchanged (sliding-window inference); ``resize``: short side -> ``base_size``."""
    if mode == "full":
        return _compose([])
    if mode == "resize":
        return _compose([A.SmallestMaxSize(max_size=base_size, interpolation=cv2.INTER_LINEAR)])
    raise ValueError(f"segmentation val mode={mode!r}; expected 'full' or 'resize'")


def depth_train_transform(
    crop_size: tuple[int, int] = (416, 544), rotation_degrees: float = 2.5, rotation_probability: float = 0.5
) -> A.Compose:
    """``Compose(image=..., mask=depth [H, W] float32, valid=[H, W] uint8)`` -> ``crop_size`` crops.

    Depth and valid maps are warped with nearest interpolation (no blending across depth edges);
    pixels rotated in from outside get depth 0 and valid 0.
    """
    height, width = crop_size
    return A.Compose(
        [
            A.Rotate(
                limit=(-rotation_degrees, rotation_degrees),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=rotation_probability,
            ),
            A.HorizontalFlip(p=0.5),
            A.PadIfNeeded(height, width, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
            A.RandomCrop(height, width),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.RandomGamma(gamma_limit=(90, 110), p=0.5),
        ],
        additional_targets={"valid": "mask"},
        strict=False,
    )


def depth_val_transform() -> A.Compose:
    """Depth is evaluated on the full image (the Eigen crop is applied to the valid mask, not the image)."""
    return A.Compose([], additional_targets={"valid": "mask"}, strict=False)
