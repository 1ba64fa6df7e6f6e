"""The recorder measures exactly the tensors the model computes, for any specialization."""

import pytest
import torch
import torch.nn.functional as F

from clsvit_lightning.analysis import analyze_backbone
from clsvit_lightning.analysis import statistics as stats
from clsvit_lightning.models import load_pretrained
from tests.analysis.tiny import tiny_vit, trained_vit


def feed(model, prefix, patches):
    """Make the model start from constructed tokens instead of embedded images."""
    model.prepare_tokens = lambda images, masks=None: (prefix, patches)


def test_a_norm_that_mutes_the_shared_channels_makes_cls_orthogonal_to_the_patches():
    # Channels 0-1 carry a signal common to all tokens (high similarity before the norm),
    # 2-3 a [CLS]-only one, 4-5 a patch-only one; the norm's weight mutes channels 0-1.
    model = tiny_vit(embed_dim=6, depth=1, img_size=16).eval()  # 2 x 2 = 4 patches
    cls = torch.tensor([[[5.0, -5.0, 1.0, -1.0, 0.0, 0.0]]])  # [1, 1, 6]
    strength = torch.tensor([1.0, 1.5, 2.0, 1.2]).view(1, 4, 1)
    patches = torch.tensor([5.0, -5.0, 0.0, 0.0, 1.0, -1.0]) * torch.ones(1, 4, 1)
    patches[..., 4:] *= strength  # [1, 4, 6]
    feed(model, cls, patches)
    with torch.no_grad():
        model.blocks[0].norm1.weight.copy_(torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 1.0]))
        model.blocks[0].norm1.bias.zero_()
    entry = analyze_backbone(model, torch.zeros(1, 3, 16, 16)).report["blocks"][0]["norm1"]
    assert entry["pre"]["cls_patch"] > 0.9
    assert entry["post"]["cls_patch"] == pytest.approx(0.0, abs=1e-6)
    assert entry["post"]["patch_patch"] == pytest.approx(1.0, abs=1e-6)  # patches keep their common direction
    channels = entry["channels"]
    assert set(channels["cls_specific"][:2]) == {2, 3}
    assert set(channels["patch_specific"][:2]) == {4, 5}
    # Before the norm the shared channels 0-1 are as large for [CLS] as for the patches (specificity 0).
    assert entry["channels_pre"]["specificity"][:2] == pytest.approx([0.0, 0.0], abs=0.1)
    assert set(entry["channels_pre"]["cls_specific"][:2]) == {2, 3}


def expected_norm_entry(norm, prefix, patches):
    """Reference: the statistics applied to tensors computed step by step, outside any hook."""
    post_prefix, post_patches = norm(prefix, patches)
    tokens = torch.cat([prefix, patches], dim=1)
    paths = {}
    for path, weight, bias in (
        ("prefix", norm.prefix_parameter("weight"), norm.prefix_parameter("bias")),
        ("patch", norm.weight, norm.bias),
    ):
        normed = F.layer_norm(tokens, tokens.shape[-1:], weight, bias, norm.eps)
        paths[path] = stats.similarities(normed[:, 0], normed[:, 1 : prefix.shape[1]], normed[:, prefix.shape[1] :])
    return {
        "pre": stats.similarities(prefix[:, 0], prefix[:, 1:], patches),
        "post": stats.similarities(post_prefix[:, 0], post_prefix[:, 1:], post_patches),
        "paths": paths,
        "path_weight_cosine": F.cosine_similarity(norm.prefix_parameter("weight"), norm.weight, dim=0).item(),
        "channels": stats.channel_magnitudes(post_prefix[:, 0], post_patches, 8),
        "channels_pre": stats.channel_magnitudes(prefix[:, 0], patches, 8),
    }


def assert_close(got, expected):
    if isinstance(expected, dict):
        assert got.keys() == expected.keys()
        for key in expected:
            assert_close(got[key], expected[key])
    elif isinstance(expected, list):
        assert got == pytest.approx(expected, abs=1e-5)
    elif expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    "spec, num_registers", [("vanilla", 0), ("paper", 2), ("paper;registers_path:patch", 2), ("norm1:all", 0)]
)
@torch.no_grad()
def test_every_figure_matches_a_step_by_step_computation(spec, num_registers):
    model = trained_vit(spec, num_registers)  # prefix twins perturbed too: the two paths differ
    images = torch.randn(2, 3, 32, 40)  # not square: 4 x 5 patches
    report = analyze_backbone(model, images).report
    num_prefix = 1 + num_registers

    prefix, patches = model.prepare_tokens(images)
    for block, got in zip(model.blocks, report["blocks"], strict=True):
        assert_close(got["norm1"], expected_norm_entry(block.norm1, prefix, patches))
        normed = block.norm1(prefix, patches)
        expected_attention, _ = stats.attention_statistics(block.attn.attention_probs(*normed), num_prefix)
        assert_close(got["attention"], expected_attention)
        branch = block.ls1(*block.attn(*normed))
        middle = prefix + branch[0], patches + branch[1]
        assert_close(got["norm2"], expected_norm_entry(block.norm2, *middle))
        prefix, patches = block(prefix, patches)
        assert_close(got["token_norms"], stats.token_norms(prefix[:, 0], prefix[:, 1:], patches, 3.0))
    assert_close(report["final_norm"], expected_norm_entry(model.norm, prefix, patches))


@torch.no_grad()
def test_a_specialized_norm_is_reported_along_both_paths():
    model = trained_vit("norm1:all", num_registers=1)
    norm = model.blocks[0].norm1
    norm.prefix_weight.copy_(torch.linspace(-1, 1, norm.weight.numel()))
    entry = analyze_backbone(model, torch.randn(2, 3, 32, 32)).report["blocks"][0]["norm1"]
    assert entry["post"]["patch_patch"] == pytest.approx(entry["paths"]["patch"]["patch_patch"])
    assert entry["post"]["cls_patch"] != pytest.approx(entry["paths"]["patch"]["cls_patch"])
    assert entry["post"]["cls_patch"] != pytest.approx(entry["paths"]["prefix"]["cls_patch"])
    assert entry["path_weight_cosine"] < 0.9


@pytest.mark.parametrize("spec", ["paper", "paper;registers_path:patch", "norm1,qkv,proj,mlp:all;final_norm"])
@pytest.mark.parametrize("num_registers", [0, 3])
def test_vanilla_and_its_warm_started_specialized_copy_give_identical_figures(spec, num_registers):
    vanilla = trained_vit("vanilla", num_registers)
    specialized = tiny_vit(spec, num_registers).eval()
    load_pretrained(specialized, vanilla.state_dict())
    images = torch.randn(2, 3, 32, 32)
    first, second = analyze_backbone(vanilla, images), analyze_backbone(specialized, images)
    assert first.report["model"]["specialization"] == "vanilla"
    assert second.report["model"]["specialization"] != "vanilla"
    strip = lambda report: {key: value for key, value in report.items() if key != "model"}
    assert strip(first.report) == strip(second.report)
    assert torch.equal(first.cls_attention, second.cls_attention)
    assert torch.equal(first.patch_features, second.patch_features)


def test_any_input_size_and_the_tensors_kept_for_the_plots():
    model = tiny_vit(num_registers=2)
    analysis = analyze_backbone(model, torch.randn(3, 3, 24, 56))  # 3 x 7 patches, pos-embed interpolated
    assert analysis.report["input"] == {"num_images": 3, "height": 24, "width": 56, "grid": [3, 7], "num_patches": 21}
    assert analysis.cls_attention.shape == (3, 3, 3, 3, 7)  # [depth, B, heads, h, w]
    assert torch.allclose(analysis.cls_attention.sum(dim=(-2, -1)), torch.ones(3, 3, 3))
    assert analysis.patch_features.shape == (3, 3, 7, 48)  # [B, h, w, D]


def test_the_model_is_left_as_found_and_bad_inputs_are_named():
    model = tiny_vit().train()
    analyze_backbone(model, torch.randn(1, 3, 32, 32))
    assert model.training
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in model.modules())
    with pytest.raises(ValueError, match="not divisible by the patch size 8"):
        analyze_backbone(model, torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        analyze_backbone(model, torch.randn(3, 32, 32))
