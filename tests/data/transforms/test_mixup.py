import pytest
import torch

from clsvit_lightning.data.transforms.mixup import MixupCutmix, cutmix, cutmix_box, mixup, one_hot_targets


def two_images():
    """Image 0 all zeros (label 0), image 1 all ones (label 2): pixel values say where they came from."""
    images = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])
    return images, torch.tensor([0, 2])


def test_one_hot_targets_with_label_smoothing():
    targets = one_hot_targets(torch.tensor([1, 0]), 4, label_smoothing=0.2)
    torch.testing.assert_close(targets, torch.tensor([[0.05, 0.85, 0.05, 0.05], [0.85, 0.05, 0.05, 0.05]]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        one_hot_targets(torch.tensor([4]), 4)


def test_mixup_by_hand():
    images, labels = two_images()
    mixed, targets = mixup(images, one_hot_targets(labels, 3), lam=0.7)
    torch.testing.assert_close(mixed[0], torch.full((3, 4, 4), 0.3))
    torch.testing.assert_close(mixed[1], torch.full((3, 4, 4), 0.7))
    torch.testing.assert_close(targets, torch.tensor([[0.7, 0.0, 0.3], [0.3, 0.0, 0.7]]))


def test_cutmix_by_hand_lambda_is_the_kept_area():
    images, labels = two_images()
    mixed, targets, lam = cutmix(images, one_hot_targets(labels, 3), box=(0, 2, 1, 4))  # 2 x 3 pixels pasted
    assert lam == 1 - 6 / 16
    expected = torch.zeros(3, 4, 4)
    expected[:, 0:2, 1:4] = 1.0
    torch.testing.assert_close(mixed[0], expected)
    torch.testing.assert_close(mixed[1], 1.0 - expected)
    torch.testing.assert_close(targets, torch.tensor([[10 / 16, 0.0, 6 / 16], [6 / 16, 0.0, 10 / 16]]))


def test_cutmix_box_is_clipped_inside_the_image():
    torch.manual_seed(0)
    for lam in (0.0, 0.3, 0.9, 1.0):
        for _ in range(20):
            top, bottom, left, right = cutmix_box(8, 6, lam)
            assert 0 <= top <= bottom <= 8 and 0 <= left <= right <= 6
            assert (bottom - top) * (right - left) <= (1 - lam) * 48 + 1e-9


@pytest.mark.parametrize(("mixup_alpha", "cutmix_alpha"), [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_random_mixing_label_mass_sums_to_one_and_follows_the_pixels(mixup_alpha, cutmix_alpha):
    torch.manual_seed(0)
    mixer = MixupCutmix(num_classes=3, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha)
    images, labels = two_images()
    for _ in range(30):
        mixed, targets = mixer(images, labels)
        torch.testing.assert_close(targets.sum(dim=1), torch.ones(2))
        # The mean pixel of image 0 is the fraction (mixup: weight) coming from image 1 (label 2).
        torch.testing.assert_close(mixed[0].mean(), targets[0, 2])
        if cutmix_alpha and not mixup_alpha:  # cutmix only: pixels are 0 or 1, never blended
            assert set(mixed.unique().tolist()) <= {0.0, 1.0}


def test_switch_probability_picks_the_method():
    images, labels = two_images()
    torch.manual_seed(0)
    only_cutmix = MixupCutmix(3, mixup_alpha=0.8, cutmix_alpha=1.0, switch_probability=1.0)
    assert all(set(only_cutmix(images, labels)[0].unique().tolist()) <= {0.0, 1.0} for _ in range(10))
    only_mixup = MixupCutmix(3, mixup_alpha=0.8, cutmix_alpha=1.0, switch_probability=0.0)
    for _ in range(10):
        mixed, targets = only_mixup(images, labels)
        torch.testing.assert_close(mixed[0], torch.full_like(mixed[0], float(targets[0, 2])))


def test_disabled_mixing_returns_one_hot_targets():
    images, labels = two_images()
    for mixer in (MixupCutmix(3, probability=0.0), MixupCutmix(3, mixup_alpha=0.0, cutmix_alpha=0.0)):
        mixed, targets = mixer(images, labels)
        assert mixed is images
        torch.testing.assert_close(targets, one_hot_targets(labels, 3))


def test_bad_options_name_themselves():
    with pytest.raises(ValueError, match="cutmix_alpha must be >= 0"):
        MixupCutmix(3, cutmix_alpha=-1.0)
    with pytest.raises(ValueError, match=r"switch_probability must be in \[0, 1\]"):
        MixupCutmix(3, switch_probability=2.0)
