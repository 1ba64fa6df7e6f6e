"""Read a folder of images for the analysis: resize, centre-crop, ImageNet normalisation.

Kept independent of the training data pipeline on purpose: the analysis must run on any
folder of pictures (a few photos, a dataset split) with no dataset layout required.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from clsvit_lightning.data.transforms.tensors import IMAGENET_MEAN, IMAGENET_STD

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def find_images(folder: str | Path, max_images: int | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted: the same batch on every run)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data: image folder {folder} does not exist or is not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"--data: no {'/'.join(IMAGE_SUFFIXES)} images found under {folder}")
    return paths[:max_images] if max_images else paths


def load_image(path: str | Path, size: int, patch_size: int) -> Tensor:
    """One image as a normalised ``[3, S, S]`` tensor, ``S`` = ``size`` rounded down to the patch size.

    The shorter side is resized to ``S`` (area interpolation when shrinking), then the centre
    ``S x S`` square is kept, as in the usual evaluation transform.
    """
    side = size - size % patch_size
    if side <= 0:
        raise ValueError(f"--img_size {size} is smaller than the patch size {patch_size}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}: unreadable, truncated or not an image")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    height, width = rgb.shape[:2]
    scale = side / min(height, width)
    new_size = (max(side, round(width * scale)), max(side, round(height * scale)))  # cv2 wants (w, h)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    rgb = cv2.resize(rgb, new_size, interpolation=interpolation)
    top, left = (rgb.shape[0] - side) // 2, (rgb.shape[1] - side) // 2
    rgb = rgb[top : top + side, left : left + side]
    array = (rgb.astype(np.float32) / 255.0 - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(
        IMAGENET_STD, np.float32
    )
    return torch.from_numpy(array.transpose(2, 0, 1).copy())  # [S, S, 3] -> [3, S, S]


def load_images(
    folder: str | Path, size: int, patch_size: int, max_images: int | None = 8
) -> tuple[Tensor, list[Path]]:
    """A normalised batch ``[B, 3, S, S]`` of the first ``max_images`` images under ``folder``, and their paths."""
    paths = find_images(folder, max_images)
    return torch.stack([load_image(path, size, patch_size) for path in paths]), paths
