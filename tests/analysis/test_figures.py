"""The figures: each is written as a PNG that matplotlib reads back (with and without registers),
and the PCA picture takes its colours from the principal components."""

import matplotlib.image
import numpy as np
import pytest
import torch

from clsvit_lightning.analysis import analyze_backbone, figure_to_array, make_figures, pca_rgb, save_figures
from tests.analysis.tiny import trained_vit

EXPECTED = {
    "similarity_vs_depth", "channel_magnitudes_norm1", "channel_magnitudes_norm2", "attention_entropy",
    "token_norms", "pca",
}  # fmt: skip


@pytest.mark.parametrize("spec, num_registers", [("vanilla", 0), ("paper", 2)])
def test_figures_are_written_and_readable(tmp_path, spec, num_registers):
    images = torch.randn(2, 3, 32, 40)
    analysis = analyze_backbone(trained_vit(spec, num_registers), images)
    figures = make_figures(analysis, images, attention_blocks=[0, -1])
    assert set(figures) == EXPECTED | {"attention_block00", "attention_block02"}
    paths = save_figures(figures, tmp_path / "plots")
    for name, path in paths.items():
        assert path == tmp_path / "plots" / f"{name}.png"
        pixels = matplotlib.image.imread(path)  # [H, W, 4] floats
        assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
        assert pixels[..., :3].std() > 0.01, f"{name}.png is blank"


def test_figure_to_array_gives_rgb_bytes():
    analysis = analyze_backbone(trained_vit(), torch.randn(1, 3, 32, 32))
    array = figure_to_array(make_figures(analysis, torch.randn(1, 3, 32, 32))["token_norms"])
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3


def test_an_attention_block_out_of_range_is_named():
    images = torch.randn(1, 3, 32, 32)
    analysis = analyze_backbone(trained_vit(), images)
    with pytest.raises(ValueError, match="attention_blocks: block 7 is out of range; valid blocks are 0..2"):
        make_figures(analysis, images, attention_blocks=[7])


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
