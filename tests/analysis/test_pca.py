"""PCA of patch features as RGB: the first component drives the first colour channel."""

import torch

from clsvit_lightning.analysis import pca_rgb


def test_colours_follow_the_principal_components():
    # 2 images of 4 x 5 patches in 16 channels; std about 9 along e0, 3 along e1, 1 along e2.
    count = 40
    first = torch.linspace(0, 1, count) ** 2 * 30  # skewed: its largest deviation is positive
    second, third = torch.randn(count) * 3, torch.randn(count)
    features = torch.zeros(count, 16)
    features[:, 0], features[:, 1], features[:, 2] = first, second, third
    rotation, _ = torch.linalg.qr(torch.randn(16, 16))
    rgb = pca_rgb((features @ rotation).reshape(2, 4, 5, 16))
    assert rgb.shape == (2, 4, 5, 3)
    assert rgb.min() >= 0 and rgb.max() <= 1
    red = rgb[..., 0].reshape(-1)
    assert torch.corrcoef(torch.stack([red, first]))[0, 1] > 0.99  # positive: signs are fixed
    assert torch.corrcoef(torch.stack([rgb[..., 1].reshape(-1), second]))[0, 1].abs() > 0.95


def test_fewer_than_three_channels_pad_with_grey():
    rgb = pca_rgb(torch.randn(1, 2, 2, 2))
    assert rgb.shape == (1, 2, 2, 3)
