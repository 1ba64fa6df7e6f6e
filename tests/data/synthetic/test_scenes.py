"""Synthetic scenes: deterministic, labels consistent with the masks, class content learnable from pixels."""

import numpy as np
import pytest

from clsvit_lightning.data.synthetic.scenes import (
    BACKGROUND_LABEL,
    FIRST_OBJECT_LABEL,
    SHAPES,
    make_scene,
    shape_mask,
)


def test_same_seed_same_scene_different_seed_different_scene():
    a = make_scene(6, 2, np.random.default_rng([1, 0, 5]))
    b = make_scene(6, 2, np.random.default_rng([1, 0, 5]))
    c = make_scene(6, 2, np.random.default_rng([2, 0, 5]))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.annotation, b.annotation)
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_label_is_the_class_covering_most_pixels():
    for index in range(30):
        scene = make_scene(5, index % 5, np.random.default_rng(index), size_range=(48, 64))
        h, w = scene.annotation.shape
        assert 48 <= h <= 64 and 48 <= w <= 64 and scene.image.shape == (h, w, 3)
        counts = [(scene.annotation == FIRST_OBJECT_LABEL + c).sum() for c in range(5)]
        assert scene.label == int(np.argmax(counts))
        assert scene.label == index % 5  # the large object is drawn last, so it wins
        assert set(np.unique(scene.annotation)) <= {
            0,
            BACKGROUND_LABEL,
            *range(FIRST_OBJECT_LABEL, FIRST_OBJECT_LABEL + 5),
        }


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_draws_a_sensible_area(shape):
    mask = shape_mask(shape, 64, 64, np.array([32.0, 32.0]), 20.0, 0.0)
    # between a thin bar/ring and the full disc of radius 20
    assert 0.15 * np.pi * 400 < mask.sum() <= np.pi * 21**2
    assert mask[32 + 25 :, :].sum() == 0  # nothing outside the radius


def test_pixel_colours_predict_the_segmentation_class():
    """A nearest-mean classifier on raw RGB (a linear rule) already beats chance by far: the dense task is learnable."""
    num_classes = 6
    train = [make_scene(num_classes, i % num_classes, np.random.default_rng([0, i])) for i in range(36)]
    test = [make_scene(num_classes, i % num_classes, np.random.default_rng([1, i])) for i in range(12)]

    def pixels(scenes):
        rgb = np.concatenate([s.image.reshape(-1, 3) for s in scenes]).astype(np.float32)
        labels = np.concatenate([s.annotation.ravel() for s in scenes])
        keep = labels > 0  # drop the unlabelled clutter, as reduce-zero-label does
        return rgb[keep], labels[keep]

    train_rgb, train_labels = pixels(train)
    classes = np.unique(train_labels)
    means = np.stack([train_rgb[train_labels == c].mean(0) for c in classes])  # [classes, 3]
    test_rgb, test_labels = pixels(test)
    predicted = classes[np.argmin(((test_rgb[:, None] - means[None]) ** 2).sum(-1), axis=1)]
    accuracy = (predicted == test_labels).mean()
    assert accuracy > 0.9, accuracy  # always predicting background (~3/4 of the pixels) gives ~0.75
    object_pixels = test_labels >= FIRST_OBJECT_LABEL
    assert (predicted[object_pixels] == test_labels[object_pixels]).mean() > 0.9  # chance: 1/6
