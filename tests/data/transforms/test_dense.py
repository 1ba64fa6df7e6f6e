"""Segmentation and depth pipelines: same geometry for image and target, padding ignored, output sizes."""

import albumentations as A
import numpy as np
import pytest
from scipy import ndimage

from clsvit_lightning.data.transforms.dense import (
    MEAN_COLOUR,
    depth_train_transform,
    segmentation_train_transform,
    segmentation_val_transform,
)
from clsvit_lightning.data.transforms.dense_ops import PhotoMetricDistortion


def block_labels(height: int, width: int, block: int = 8) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width] // block
    return ((rows * 3 + cols) % 6).astype(np.uint8)


def test_segmentation_train_moves_image_and_mask_together():
    pipeline = segmentation_train_transform(crop_size=32, base_size=24, scale_range=(0.5, 2.0))
    transforms = list(pipeline.transforms)
    assert isinstance(transforms[-2], PhotoMetricDistortion)
    # Without the photometric step the image encodes its label: value = 40 * label + 1.
    geometry = A.Compose(transforms[:-2] + transforms[-1:], seed=0)
    mask = block_labels(24, 40, block=16)
    image = np.repeat((40 * mask + 1)[..., None], 3, axis=2)
    for _ in range(20):
        out = geometry(image=image, mask=mask)
        assert out["image"].shape == (32, 32, 3) and out["mask"].shape == (32, 32)
        labelled = out["mask"] != 255
        # Away from label edges (where bilinear image and nearest mask may differ by a pixel) they agree exactly.
        interior = labelled & (ndimage.maximum_filter(out["mask"], 5) == ndimage.minimum_filter(out["mask"], 5))
        interior[:2], interior[-2:], interior[:, :2], interior[:, -2:] = False, False, False, False  # crop borders
        assert interior.sum() > 100
        np.testing.assert_array_equal(out["image"][..., 0][interior], 40 * out["mask"][interior].astype(int) + 1)
        # Padding (small rescales) is ignore in the mask and the mean colour in the image.
        assert (out["image"][~labelled] == MEAN_COLOUR).all()


def test_segmentation_train_pads_small_images_with_ignore():
    pipeline = segmentation_train_transform(crop_size=64, base_size=16, scale_range=(1.0, 1.0))
    for seed in range(5):  # whatever the photometric draws
        pipeline.set_random_seed(seed)
        out = pipeline(image=np.full((16, 16, 3), 9, np.uint8), mask=np.zeros((16, 16), np.uint8))
        assert out["mask"].shape == (64, 64) and out["image"].shape == (64, 64, 3)
        # mmseg order: crop (the whole 16 x 16 image), distort, then pad bottom and right.
        assert (out["mask"][:16, :16] == 0).all() and (out["mask"] == 255).sum() == 64 * 64 - 16 * 16
        assert (out["image"][out["mask"] == 255] == MEAN_COLOUR).all()  # 0 once normalised, undistorted


@pytest.mark.parametrize(("mode", "shape"), [("full", (30, 50)), ("resize", (20, 33))])
def test_segmentation_val_modes(mode, shape):
    out = segmentation_val_transform(mode, base_size=20)(
        image=np.zeros((30, 50, 3), np.uint8), mask=block_labels(30, 50)
    )
    assert out["image"].shape[:2] == shape and out["mask"].shape == shape
    assert set(np.unique(out["mask"])) <= set(range(6))  # nearest: no new label values


def test_depth_train_keeps_depth_and_valid_aligned():
    pipeline = depth_train_transform(crop_size=(24, 32), rotation_degrees=2.5, rotation_probability=1.0)
    pipeline.set_random_seed(0)
    depth = np.tile(np.linspace(1.0, 5.0, 40, dtype=np.float32), (30, 1))
    valid = np.ones((30, 40), np.uint8)
    image = np.full((30, 40, 3), 120, np.uint8)
    for _ in range(10):
        out = pipeline(image=image, mask=depth, valid=valid)
        assert out["image"].shape == (24, 32, 3) and out["mask"].shape == (24, 32)
        assert out["mask"].dtype == np.float32
        # Nearest interpolation: every depth is an input depth or the 0 fill, and 0 exactly where invalid.
        assert np.isin(out["mask"], np.append(depth[0], 0.0)).all()
        np.testing.assert_array_equal(out["mask"] == 0, out["valid"] == 0)
