"""Each statistic against a direct (looped) computation on small random tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from clsvit_lightning.analysis import statistics as stats


def cos(a, b):
    return F.cosine_similarity(a.double(), b.double(), dim=0).item()


@pytest.fixture
def tokens():
    return torch.randn(3, 8), torch.randn(3, 2, 8), torch.randn(3, 5, 8) + 0.5  # cls, registers, patches


def test_cls_patch_similarity_is_the_mean_over_images_and_patches(tokens):
    cls, _, patches = tokens
    direct = sum(cos(cls[b], patches[b, j]) for b in range(3) for j in range(5)) / 15
    assert stats.cls_patch_similarity(cls, patches) == pytest.approx(direct, abs=1e-6)


def test_patch_patch_similarity_averages_distinct_pairs_within_each_image(tokens):
    _, _, patches = tokens
    per_image = [
        sum(cos(patches[b, j], patches[b, k]) for j in range(5) for k in range(5) if j != k) / 20 for b in range(3)
    ]
    assert stats.patch_patch_similarity(patches) == pytest.approx(sum(per_image) / 3, abs=1e-6)


def test_patch_patch_similarity_of_identical_patches_is_one():
    patches = torch.randn(1, 1, 8).expand(2, 6, 8)
    assert stats.patch_patch_similarity(patches) == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(stats.patch_patch_similarity(torch.randn(2, 1, 8)))  # no pair to compare


def test_register_patch_similarity(tokens):
    _, registers, patches = tokens
    direct = sum(cos(registers[b, r], patches[b, j]) for b in range(3) for r in range(2) for j in range(5)) / 30
    assert stats.register_patch_similarity(registers, patches) == pytest.approx(direct, abs=1e-6)
    assert stats.register_patch_similarity(registers[:, :0], patches) is None


def test_channel_magnitudes_and_the_most_type_specific_channels():
    cls = torch.zeros(2, 6)
    cls[:, 0] = 4.0  # channel 0: [CLS] only
    cls[:, 1] = torch.tensor([1.0, -3.0])  # |.| averages to 2
    patches = torch.ones(2, 3, 6)
    patches[..., 0] = 0.0
    patches[..., 5] = -2.0  # channel 5: patches only ([CLS] is zero there)
    entry = stats.channel_magnitudes(cls, patches, top_k=2)
    assert entry["cls_magnitude"] == pytest.approx([4, 2, 0, 0, 0, 0])
    assert entry["patch_magnitude"] == pytest.approx([0, 1, 1, 1, 1, 2])
    assert entry["specificity"] == pytest.approx([1, 1 / 3, -1, -1, -1, -1])
    assert entry["cls_specific"] == [0, 1]
    assert entry["patch_specific"][0] in (2, 3, 4, 5)
    assert entry["mean_abs_specificity"] == pytest.approx((1 + 1 / 3 + 4) / 6)


def test_token_norms_and_high_norm_outliers():
    patches = torch.ones(2, 10, 4)  # norm 2 each
    patches[0, 3] *= 10.0  # norm 20 > 3 x median: an outlier
    patches[1, 7] *= 5.0
    patches[1, 8] *= 2.0  # norm 4: not an outlier
    cls = torch.full((2, 4), 3.0)  # norm 6
    entry = stats.token_norms(cls, torch.zeros(2, 0, 4), patches, outlier_ratio=3.0)
    assert entry["cls"] == pytest.approx(6.0)
    assert entry["registers"] is None
    assert entry["patch_median"] == pytest.approx(2.0)
    assert entry["patch_max"] == pytest.approx(20.0)
    assert entry["patch_mean"] == pytest.approx(patches.norm(dim=-1).mean().item())
    assert entry["outliers"] == 2
    assert entry["outliers_per_image"] == pytest.approx(1.0)
    assert entry["outlier_fraction"] == pytest.approx(0.1)


def test_attention_entropy_of_the_cls_row_over_patches():
    num_prefix, num_patches = 3, 4
    logits = torch.randn(2, 2, num_prefix + num_patches, num_prefix + num_patches)
    attention = logits.softmax(dim=-1)  # [B, heads, T, T]
    entry, maps = stats.attention_statistics(attention, num_prefix)
    for head in range(2):
        entropies, masses = [], []
        for b in range(2):
            row = attention[b, head, 0, num_prefix:]
            masses.append(row.sum().item())
            p = row / row.sum()
            entropies.append(-sum(x * math.log(x) for x in p.tolist()))
            assert maps[b, head].tolist() == pytest.approx(p.tolist(), abs=1e-6)
        assert entry["entropy"][head] == pytest.approx(sum(entropies) / 2, abs=1e-5)
        assert entry["entropy_normalized"][head] == pytest.approx(sum(entropies) / 2 / math.log(4), abs=1e-5)
        assert entry["patch_mass"][head] == pytest.approx(sum(masses) / 2, abs=1e-6)


def test_uniform_attention_has_normalized_entropy_one_and_one_hot_zero():
    uniform = torch.full((1, 1, 5, 5), 0.2)
    entry, _ = stats.attention_statistics(uniform, 1)
    assert entry["entropy_normalized"][0] == pytest.approx(1.0)
    one_hot = torch.zeros(1, 1, 5, 5)
    one_hot[..., 2] = 1.0
    entry, _ = stats.attention_statistics(one_hot, 1)
    assert entry["entropy"][0] == pytest.approx(0.0, abs=1e-6)
