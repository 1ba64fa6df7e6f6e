"""What the image datasets share: applying a transform, and skipping corrupt files when asked to."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import albumentations as A
import numpy as np

from clsvit_lightning.data.io import CorruptImageError

log = logging.getLogger(__name__)

# A transform is an albumentations Compose (``image=`` in, ``{"image": ...}`` out) or a callable
# ``image -> dict`` (the multi-crop transform returns ``{"global_crops": ..., "local_crops": ...}``).
ImageTransform = A.BaseCompose | Callable[[np.ndarray], dict]


def apply_image_transform(transform: ImageTransform | None, image: np.ndarray) -> dict:
    if transform is None:
        return {"image": image}
    if isinstance(transform, A.BaseCompose):
        return {"image": transform(image=image)["image"]}
    return transform(image)


class CorruptSkipper:
    """Load sample ``index``; with ``skip_corrupt`` a corrupt file is logged, counted and replaced by the next one.

    The count is per process (each DataLoader worker logs its own running total).
    """

    def __init__(self, skip_corrupt: bool, max_consecutive: int = 100) -> None:
        self.skip_corrupt = skip_corrupt
        self.max_consecutive = max_consecutive
        self.num_skipped = 0

    def load(self, index: int, length: int, load_fn: Callable[[int], dict], path_fn: Callable[[int], Path]) -> dict:
        for offset in range(self.max_consecutive):
            current = (index + offset) % length
            try:
                return load_fn(current)
            except CorruptImageError as error:
                if not self.skip_corrupt:
                    raise CorruptImageError(f"{error} (set skip_corrupt: true to skip such files)") from error
                self.num_skipped += 1
                log.warning(
                    "skipped corrupt file %s (%d skipped so far in this process)", path_fn(current), self.num_skipped
                )
        raise CorruptImageError(f"{self.max_consecutive} consecutive corrupt samples from index {index}; stopping")
