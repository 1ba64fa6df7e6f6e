"""The DINOv2 multi-crop recipe (docs/recipe.md#multi-crop-augmentation): crop sizes, scales, and each crop's
photometric probabilities."""

import math

import albumentations as A
import numpy as np
import pytest

from clsvit_lightning.data.transforms.multicrop import MultiCropTransform
from tests.data.conftest import random_rgb

# (crop attribute, blur probability, solarize probability) per option, from the recipe's table.
EXPECTED = {
    "as_applied": {"global_1": (0.0, 0.0), "global_2": (0.9, 0.2), "local": (0.5, 0.0)},
    "as_written": {"global_1": (1.0, 0.0), "global_2": (0.1, 0.2), "local": (0.5, 0.0)},
}


def transform_of(compose: A.Compose, kind: type) -> A.BasicTransform:
    (found,) = [t for t in compose.transforms if isinstance(t, kind)]
    return found


def test_crop_counts_sizes_and_dtype():
    crops = MultiCropTransform(global_crop_size=32, local_crop_size=12, num_local_crops=3)(random_rgb(50, 70))
    assert [c.shape for c in crops["global_crops"]] == [(32, 32, 3)] * 2
    assert [c.shape for c in crops["local_crops"]] == [(12, 12, 3)] * 3
    assert all(c.dtype == np.uint8 for c in crops["global_crops"] + crops["local_crops"])


def test_default_is_what_the_released_models_were_trained_with():
    transform = MultiCropTransform()
    assert transform.blur_probabilities == "as_applied"
    assert transform_of(transform.global_1, A.GaussianBlur).p == 0.0
    assert transform_of(transform.global_2, A.GaussianBlur).p == 0.9


@pytest.mark.parametrize("option", ["as_applied", "as_written"])
def test_each_crop_is_blurred_and_solarized_as_often_as_the_option_says(option):
    """Count how often each crop type's blur/solarize actually ran (albumentations keeps the last call's params)."""
    transform = MultiCropTransform(16, 8, num_local_crops=1, blur_probabilities=option)
    image = random_rgb(24, 24)
    draws = 400
    for crop, (blur_p, solarize_p) in EXPECTED[option].items():
        compose = getattr(transform, crop)
        compose.set_random_seed(11)
        blur, solarize = transform_of(compose, A.GaussianBlur), transform_of(compose, A.Solarize)
        blurred = solarized = 0
        for _ in range(draws):
            compose(image=image)
            blurred += bool(blur.params)
            solarized += bool(solarize.params)
        for count, p in ((blurred, blur_p), (solarized, solarize_p)):
            tolerance = 4.5 * math.sqrt(draws * p * (1 - p)) + 1e-9  # 4.5 binomial sigmas
            assert abs(count - draws * p) <= tolerance, (crop, count, p)


def test_shared_recipe_constants():
    transform = MultiCropTransform(blur_probabilities="as_written")
    for crop, scale, size in (
        ("global_1", (0.32, 1.0), 224),
        ("global_2", (0.32, 1.0), 224),
        ("local", (0.05, 0.32), 96),
    ):
        compose = getattr(transform, crop)
        resized = transform_of(compose, A.RandomResizedCrop)
        assert tuple(resized.scale) == scale and tuple(resized.size) == (size, size)
        jitter = transform_of(compose, A.ColorJitter)
        # torchvision convention: factor b -> [1 - b, 1 + b], hue h -> [-h, h].
        assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue, jitter.p) == (
            (0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1), 0.8
        )  # fmt: skip
        assert transform_of(compose, A.ToGray).p == 0.2
        assert transform_of(compose, A.HorizontalFlip).p == 0.5
        blur = transform_of(compose, A.GaussianBlur)
        assert tuple(blur.blur_limit) == (9, 9) and tuple(blur.sigma_limit) == (0.1, 2.0)


def test_local_crop_area_follows_its_scale_range():
    transform = MultiCropTransform(16, 8, num_local_crops=1)
    transform.local.set_random_seed(0)
    resized = transform_of(transform.local, A.RandomResizedCrop)
    image = random_rgb(60, 60)
    fractions = []
    for _ in range(200):
        transform.local(image=image)
        x_min, y_min, x_max, y_max = resized.params["crop_coords"]
        fractions.append((x_max - x_min) * (y_max - y_min) / 3600)
    # Integer rounding of the crop box allows a little slack around [0.05, 0.32].
    assert 0.04 <= min(fractions) and max(fractions) <= 0.34
    assert np.mean(fractions) == pytest.approx(0.185, abs=0.03)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="blur_probabilities"):
        MultiCropTransform(blur_probabilities="inverted")
    with pytest.raises(ValueError, match="interpolation"):
        MultiCropTransform(interpolation="nearest")
