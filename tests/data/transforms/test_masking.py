"""iBOT block masking (docs/recipe.md#ibot-masking): counts never exceed the target, ratios are stratified over
the batch."""

import numpy as np
import pytest
from scipy import ndimage

from clsvit_lightning.data.transforms.masking import BlockMaskGenerator, stratified_masks


@pytest.mark.parametrize("target", [0, 5, 40, 98])
def test_mask_reaches_but_never_exceeds_the_target(target):
    generator = BlockMaskGenerator(14, 14)
    for seed in range(20):
        mask = generator(target, np.random.default_rng(seed))
        assert mask.shape == (14, 14) and mask.dtype == bool
        assert mask.sum() <= target
        # BEiT's generator stops early only when 10 placements fail; on a 14x14 grid it almost always fills.
        assert mask.sum() >= 0.8 * target


def test_masks_are_made_of_blocks_not_scattered_patches():
    generator = BlockMaskGenerator(14, 14)
    mask = generator(60, np.random.default_rng(0))
    _, num_components = ndimage.label(mask)
    # 60 patches from rectangles of >= 4 patches: far fewer connected pieces than patches.
    assert num_components <= 15
    random_mask = np.zeros(196, bool)
    random_mask[np.random.default_rng(0).choice(196, 60, replace=False)] = True
    assert ndimage.label(random_mask.reshape(14, 14))[1] > num_components


def test_ratios_are_stratified_over_the_range():
    generator = BlockMaskGenerator(16, 16)
    num_crops, probability = 32, 0.5
    masks = stratified_masks(generator, num_crops, (0.1, 0.5), probability, np.random.default_rng(1))
    assert masks.shape == (32, 256)
    counts = np.sort(masks.sum(1))
    assert (counts[: num_crops // 2] == 0).all()  # int(32 * 0.5) crops are masked, the rest empty
    masked_ratios = counts[num_crops // 2 :] / 256
    edges = np.linspace(0.1, 0.5, num_crops // 2 + 1)
    # Sorted ratio i lies in bucket i: at most the bucket's top, and not far below its bottom.
    assert (masked_ratios <= edges[1:] + 1e-9).all()
    assert (masked_ratios >= 0.8 * edges[:-1]).all()


def test_masked_crops_are_shuffled():
    generator = BlockMaskGenerator(8, 8)
    first_masked = [
        np.flatnonzero(stratified_masks(generator, 8, (0.1, 0.5), 0.5, np.random.default_rng(seed)).any(1))
        for seed in range(10)
    ]
    assert len({tuple(positions) for positions in first_masked}) > 1
