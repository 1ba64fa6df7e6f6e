"""DINOv2 multi-crop augmentation (``dinov2/data/augmentations.py``) with albumentations.

See docs/recipe.md#multi-crop-augmentation.

Each image gives two global crops (``RandomResizedCrop(224, scale=(0.32, 1.0))``, bicubic) and
``num_local_crops`` local crops (96 px, or 98 for patch 14; ``scale=(0.05, 0.32)``). Every crop gets a
horizontal flip (0.5), colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1) with
p=0.8, grayscale with p=0.2, then a Gaussian blur (9x9 kernel, sigma ~ U(0.1, 2.0)); the second
global crop also gets solarize (p=0.2, threshold 128).

Blur probabilities. DINOv2's ``GaussianBlur(p)`` subclasses ``RandomApply`` with ``1 - p`` (its
comment wrongly says torchvision inverts it), so its config and its training disagree:

==============  ===============  ===============
crop            ``as_written``   ``as_applied``
==============  ===============  ===============
global 1        1.0              0.0
global 2        0.1              0.9
local           0.5              0.5
==============  ===============  ===============

The released DINOv2/DINOv3 checkpoints were trained with ``as_applied`` (dinov3 #286, PR #342;
dinov2 PR #411), hence the default.

Resizing. DINOv2 crops PIL images, whose bicubic resize antialiases when it shrinks; OpenCV's
does not. ``antialias=True`` shrinks with ``INTER_AREA`` instead (nearly every crop shrinks): closer
to the reference, at 0.56x the augmentation's speed (175-188 vs 318-328 samples/s/core on one core
of the 2-core dev VM, 500x375 input). The default keeps the plain cubic resize, for speed.
"""

from __future__ import annotations

from typing import Literal

import albumentations as A
import cv2
import numpy as np

BlurProbabilities = Literal["as_applied", "as_written"]

# (global 1, global 2, local) blur probability for each reading of the reference code.
BLUR_PROBABILITIES: dict[str, tuple[float, float, float]] = {
    "as_written": (1.0, 0.1, 0.5),
    "as_applied": (0.0, 0.9, 0.5),
}
SOLARIZE_PROBABILITY_SECOND_GLOBAL = 0.2
INTERPOLATIONS = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR}


def crop_pipeline(
    size: int,
    scale: tuple[float, float],
    blur_probability: float,
    solarize_probability: float,
    interpolation: str = "bicubic",
    antialias: bool = False,
) -> A.Compose:
    """One crop type: random resized crop, flip, colour jitter, grayscale, blur, solarize (uint8 in and out).

    ``antialias``: shrink with ``INTER_AREA`` (see :class:`MultiCropTransform`).
    """
    return A.Compose(
        [
            A.RandomResizedCrop(
                (size, size),
                scale=scale,
                interpolation=INTERPOLATIONS[interpolation],
                area_for_downscale="image" if antialias else None,
            ),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8),
            A.ToGray(num_output_channels=3, p=0.2),
            A.GaussianBlur(blur_limit=(9, 9), sigma_limit=(0.1, 2.0), p=blur_probability),
            # threshold_range is a fraction of 255: 0.5 reproduces torchvision's solarize(threshold=128).
            A.Solarize(threshold_range=(0.5, 0.5), p=solarize_probability),
        ],
        # The crops are built here, not user input: skip the per-call argument and shape checks.
        strict=False,
        is_check_shapes=False,
    )


class MultiCropTransform:
    """``image`` ``[H, W, 3]`` uint8 -> ``{"global_crops": [2 x [G, G, 3]], "local_crops": [n x [L, L, 3]]}``.

    Crops stay ``uint8``; :func:`clsvit_lightning.data.transforms.collate.MultiCropCollate` stacks
    and normalises them per batch. Each crop type is its own ``Compose`` so that
    :func:`clsvit_lightning.data.seeding.reseed_augmentations` can give each its own stream.
    """

    def __init__(
        self,
        global_crop_size: int = 224,
        local_crop_size: int = 96,
        num_local_crops: int = 8,
        global_crop_scale: tuple[float, float] = (0.32, 1.0),
        local_crop_scale: tuple[float, float] = (0.05, 0.32),
        blur_probabilities: BlurProbabilities = "as_applied",
        interpolation: Literal["bicubic", "bilinear"] = "bicubic",
        antialias: bool = False,
    ) -> None:
        if blur_probabilities not in BLUR_PROBABILITIES:
            raise ValueError(
                f"blur_probabilities={blur_probabilities!r}; expected one of {sorted(BLUR_PROBABILITIES)} "
                "(see the table in clsvit_lightning/data/transforms/multicrop.py)"
            )
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation={interpolation!r}; expected one of {sorted(INTERPOLATIONS)}")
        if num_local_crops < 0:
            raise ValueError(f"num_local_crops={num_local_crops}; expected >= 0")
        blur_global_1, blur_global_2, blur_local = BLUR_PROBABILITIES[blur_probabilities]
        self.blur_probabilities = blur_probabilities
        self.num_local_crops = num_local_crops
        self.global_crop_size = global_crop_size
        self.local_crop_size = local_crop_size
        resize = {"interpolation": interpolation, "antialias": antialias}
        self.global_1 = crop_pipeline(global_crop_size, global_crop_scale, blur_global_1, 0.0, **resize)
        self.global_2 = crop_pipeline(
            global_crop_size, global_crop_scale, blur_global_2, SOLARIZE_PROBABILITY_SECOND_GLOBAL, **resize
        )
        self.local = crop_pipeline(local_crop_size, local_crop_scale, blur_local, 0.0, **resize)

    def __call__(self, image: np.ndarray) -> dict[str, list[np.ndarray]]:
        return {
            "global_crops": [self.global_1(image=image)["image"], self.global_2(image=image)["image"]],
            "local_crops": [self.local(image=image)["image"] for _ in range(self.num_local_crops)],
        }

    def __repr__(self) -> str:
        return (
            f"MultiCropTransform(global={self.global_crop_size} x2, local={self.local_crop_size} "
            f"x{self.num_local_crops}, blur={self.blur_probabilities})"
        )
