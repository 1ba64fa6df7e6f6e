"""iBOT block-wise masking (BEiT's ``MaskingGenerator``, ``dinov2/data/masking.py``; docs/recipe.md#ibot-masking).

A mask over the ``height x width`` patch grid is grown by adding random rectangles until it holds
``num_masked`` patches. Each rectangle has area ``U(min_patches, remaining)`` (at most
``max_patches_per_block``), aspect ratio log-uniform in ``[min_aspect, 1 / min_aspect]``, and is kept
only if it adds between 1 and ``remaining`` new patches; after 10 failed placements the mask stops
early, so a mask never holds more than ``num_masked`` patches and rarely fewer.

:func:`stratified_masks` draws the masks of one batch: of the ``n`` global crops,
``int(n * mask_sample_probability)`` get a mask, the ``i``-th with a ratio drawn uniformly in the
``i``-th of that many equal buckets of ``mask_ratio_range`` (so ratios are spread over the range
within every batch); the others are empty, and the list is shuffled.
"""

from __future__ import annotations

import math

import numpy as np


class BlockMaskGenerator:
    """Block-wise masks ``[height, width]`` bool with exactly-or-fewer ``num_masked`` True patches."""

    def __init__(
        self,
        height: int,
        width: int,
        min_patches_per_block: int = 4,
        max_patches_per_block: int | None = None,
        min_aspect: float = 0.3,
        max_tries: int = 10,
    ) -> None:
        self.height, self.width = height, width
        self.num_patches = height * width
        self.min_patches_per_block = min_patches_per_block
        # DINOv2 caps one rectangle at half of the grid.
        self.max_patches_per_block = max_patches_per_block or int(0.5 * self.num_patches)
        self.log_aspect_range = (math.log(min_aspect), math.log(1 / min_aspect))
        self.max_tries = max_tries

    def _add_block(self, mask: np.ndarray, max_new: int, rng: np.random.Generator) -> int:
        """Try to add one rectangle that masks between 1 and ``max_new`` new patches; return how many it added."""
        for _ in range(self.max_tries):
            # Python's random.uniform semantics (as in BEiT/DINOv2): max_new may be below the minimum.
            area = self.min_patches_per_block + (max_new - self.min_patches_per_block) * rng.random()
            aspect = math.exp(rng.uniform(*self.log_aspect_range))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if 0 < h < self.height and 0 < w < self.width:
                top = int(rng.integers(0, self.height - h + 1))
                left = int(rng.integers(0, self.width - w + 1))
                block = mask[top : top + h, left : left + w]
                new = h * w - int(block.sum())
                if 0 < new <= max_new:
                    block[...] = True
                    return new
        return 0

    def __call__(self, num_masked: int, rng: np.random.Generator) -> np.ndarray:
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < num_masked:
            added = self._add_block(mask, min(num_masked - count, self.max_patches_per_block), rng)
            if added == 0:
                break
            count += added
        return mask


def stratified_masks(
    generator: BlockMaskGenerator,
    num_crops: int,
    mask_ratio_range: tuple[float, float],
    mask_sample_probability: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Masks for ``num_crops`` global crops: ``[num_crops, height * width]`` bool, in shuffled order."""
    num_masked_crops = int(num_crops * mask_sample_probability)
    bucket_edges = np.linspace(*mask_ratio_range, num_masked_crops + 1)
    masks = np.zeros((num_crops, generator.num_patches), dtype=bool)
    for i in range(num_masked_crops):
        ratio = rng.uniform(bucket_edges[i], bucket_edges[i + 1])
        masks[i] = generator(int(generator.num_patches * ratio), rng).reshape(-1)  # [h, w] -> [h * w]
    return masks[rng.permutation(num_crops)]
