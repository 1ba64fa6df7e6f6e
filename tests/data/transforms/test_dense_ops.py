"""The mmseg-recipe transforms: short-side rescale, cat_max_ratio crop, photometric distortion."""

import albumentations as A
import numpy as np
import pytest

from clsvit_lightning.data.transforms.dense_ops import (
    PhotoMetricDistortion,
    RandomCropCatMaxRatio,
    RandomShortSideScale,
)
from tests.data.conftest import random_rgb

NO_OP = {"brightness": None, "contrast_first": True, "contrast": None, "saturation": None, "hue": None}


def test_short_side_scale_range_and_aspect():
    compose = A.Compose([RandomShortSideScale(base_size=40, ratio_range=(0.5, 2.0))], seed=0)
    image, mask = random_rgb(30, 60), np.zeros((30, 60), np.uint8)
    shorts = []
    for _ in range(50):
        out = compose(image=image, mask=mask)
        height, width = out["image"].shape[:2]
        assert out["mask"].shape == (height, width)
        assert width / height == pytest.approx(2.0, abs=0.05)
        shorts.append(height)
    assert 20 <= min(shorts) < 30 and 70 < max(shorts) <= 80  # 40 * [0.5, 2.0]


def test_short_side_scale_caps_the_long_side_only_on_request():
    # 1:10 image, short side target 40: DINOv2's configs do not cap the long side (img_scale 99999999).
    out = A.Compose([RandomShortSideScale(40, (1.0, 1.0))])(image=random_rgb(10, 100))
    assert out["image"].shape[:2] == (40, 400)
    # mmseg's own ADE20K config: the long side is capped at 4 * 40 = 160.
    out = A.Compose([RandomShortSideScale(40, (1.0, 1.0), max_long_side_ratio=4.0)])(image=random_rgb(10, 100))
    assert out["image"].shape[:2] == (16, 160)


def test_cat_max_ratio_rejects_crops_dominated_by_one_class():
    # Left 3/4 of the image is class 0, the right quarter class 1: a 20x20 crop is mixed only near x >= 40.
    mask = np.zeros((20, 80), np.uint8)
    mask[:, 60:] = 1
    crop = RandomCropCatMaxRatio(20, 20, cat_max_ratio=0.75)
    compose = A.Compose([crop], seed=0)
    mixed = 0
    for _ in range(100):
        out = compose(image=random_rgb(20, 80), mask=mask)
        counts = np.bincount(out["mask"].ravel(), minlength=2)
        mixed += counts.min() > 0 and counts.max() / counts.sum() < 0.75
    plain = A.Compose([RandomCropCatMaxRatio(20, 20, cat_max_ratio=1.0)], seed=0)
    plain_mixed = 0
    for _ in range(100):
        counts = np.bincount(plain(image=random_rgb(20, 80), mask=mask)["mask"].ravel(), minlength=2)
        plain_mixed += counts.min() > 0 and counts.max() / counts.sum() < 0.75
    # Accepted crops start in x in [46, 54]: 9 of 61 positions, so ~15 % plain; with 10 tries ~80 %.
    assert plain_mixed < 30 and mixed > 60


def test_crop_keeps_a_side_shorter_than_the_crop_whole_like_mmseg():
    compose = A.Compose([RandomCropCatMaxRatio(20, 20, cat_max_ratio=1.0)], seed=0)
    image = random_rgb(12, 50)
    lefts = set()
    for _ in range(200):
        out = compose(image=image)["image"]
        assert out.shape == (12, 20, 3)
        lefts.add(int(np.flatnonzero((image[:, :, :] == out[:, :1]).all(axis=(0, 2)))[0]))
    assert lefts == set(range(31))  # every offset in [0, 50 - 20], both ends included


def test_cat_max_ratio_ignores_the_ignore_label():
    mask = np.full((10, 10), 255, np.uint8)
    mask[:, :5] = 0
    mask[:, 5:6] = 1  # labelled pixels: 50 of class 0, 10 of class 1 -> max ratio 0.83 everywhere
    crop = RandomCropCatMaxRatio(10, 10, cat_max_ratio=0.9)
    params = crop.get_params_dependent_on_data({"shape": (10, 10)}, {"mask": mask})
    assert params["crop_coords"] == (0, 0, 10, 10)


def test_photometric_brightness_then_contrast_truncates_like_mmseg():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, 2)
    out = PhotoMetricDistortion().apply(image, **{**NO_OP, "brightness": 10.7, "contrast": 1.3})
    step1 = np.clip(image.astype(np.float32) + 10.7, 0, 255).astype(np.uint8)
    expected = np.clip(step1.astype(np.float32) * 1.3, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(PhotoMetricDistortion().apply(image, **NO_OP), image)


def test_photometric_saturation_scales_and_hue_shifts():
    import cv2

    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 200
    red[..., 1] = 100  # an orange: hue 15 (of 180), saturation 127
    hsv_in = cv2.cvtColor(red, cv2.COLOR_RGB2HSV)[0, 0].astype(int)
    out = PhotoMetricDistortion().apply(red, **{**NO_OP, "saturation": 0.5, "hue": 10})
    hsv_out = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)[0, 0].astype(int)
    assert abs(hsv_out[0] - (hsv_in[0] + 10)) <= 1
    assert abs(hsv_out[1] - hsv_in[1] // 2) <= 2


def test_photometric_steps_each_half_the_time():
    distortion = PhotoMetricDistortion()
    distortion.set_random_seed(0)
    draws = [distortion.get_params() for _ in range(1000)]
    for key in ("brightness", "contrast", "saturation", "hue"):
        applied = sum(d[key] is not None for d in draws)
        assert 430 < applied < 570, key
    assert all(-32 <= d["brightness"] <= 32 for d in draws if d["brightness"] is not None)
    assert all(-18 <= d["hue"] <= 18 for d in draws if d["hue"] is not None)
