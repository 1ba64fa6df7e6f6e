"""What the image datasets share: applying a transform, and skipping corrupt files when asked to.

``skip_corrupt`` means two things, by use: a training set *substitutes* the next sample for a corrupt
one at load time (:class:`CorruptSkipper`; an epoch keeps its length), while an evaluation set
*drops* corrupt samples once, at construction (:func:`decodable_indices` decodes every file): a
metric must count each real sample once, never a duplicate, and every rank sees the same list.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import albumentations as A
import numpy as np

from clsvit_lightning.data.io import CorruptImageError, SkipReport

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


def decodable_indices(
    count: int, check_fn: Callable[[int], object], path_fn: Callable[[int], Path], skipped: SkipReport
) -> list[int]:
    """Indices ``0..count-1`` whose files decode (``check_fn`` raises no :class:`CorruptImageError`).

    The others are added to ``skipped`` as corrupt. Decoding runs on a thread pool (OpenCV releases
    the GIL), as this reads every file of the split once.
    """

    def decodes(index: int) -> bool:
        try:
            check_fn(index)
        except CorruptImageError:
            return False
        return True

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        ok = list(pool.map(decodes, range(count)))
    skipped.add_all(
        "corrupt (cannot decode; dropped from this evaluation set)", (path_fn(i) for i in range(count) if not ok[i])
    )
    return [index for index in range(count) if ok[index]]
