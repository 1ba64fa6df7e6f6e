"""Resizes that antialias when they shrink (like PIL): classification pipelines always, multi-crop on request."""

import numpy as np
import pytest

from clsvit_lightning.data.transforms.classification import classification_transform
from clsvit_lightning.data.transforms.multicrop import crop_pipeline


def stripes(height: int, width: int) -> np.ndarray:
    """One-pixel black/white columns: any resize that shrinks it should give flat grey."""
    row = np.where(np.arange(width) % 2 == 0, 0, 255).astype(np.uint8)
    return np.repeat(np.repeat(row[None, :, None], height, axis=0), 3, axis=2)


@pytest.mark.parametrize("pipeline", ["eval", "linear", "supervised"])
def test_outputs_are_uint8_crops(pipeline):
    out = classification_transform(pipeline, crop_size=32, resize_size=36)(image=stripes(50, 70))["image"]
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_shrinking_fine_texture_gives_flat_grey_not_aliasing():
    # 400 x 533 -> short side 110 -> centre 96: cv2's cubic alone gives moire stripes (std 88).
    out = classification_transform("eval", crop_size=96, resize_size=110)(image=stripes(400, 533))["image"]
    assert out.astype(float).std() < 12 and abs(out.mean() - 127.5) < 12


def test_random_resized_crops_antialias_on_average():
    # Random zooms: INTER_AREA's box filter leaves some beat at factors below 2, none at 2 (std 20-45 vs 88).
    transform = classification_transform("linear", crop_size=96)
    transform.set_random_seed(0)
    assert np.mean([transform(image=stripes(400, 533))["image"].astype(float).std() for _ in range(10)]) < 35


def test_multicrop_crops_antialias_on_request():
    # No blur: only the resize can smooth. Plain cubic (the default, for speed) aliases.
    for antialias, bound in ((True, lambda std: std < 15), (False, lambda std: std > 40)):
        local = crop_pipeline(24, (0.05, 0.32), 0.0, 0.0, "bicubic", antialias=antialias)
        local.set_random_seed(0)
        for _ in range(5):
            assert bound(local(image=stripes(600, 600))["image"].astype(float).std())  # jitter: at most 1.4x
