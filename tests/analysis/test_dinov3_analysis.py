"""The analysis of a DINOv3 backbone: attention maps with RoPE, ``clsvit analyze`` on an official checkpoint,
and the advisor's proposal for it."""

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clsvit_lightning.analysis import REPORT_KEYS, advise, analyze_backbone, report_keys
from clsvit_lightning.analysis import statistics as stats
from clsvit_lightning.cli import run
from clsvit_lightning.models import Specialization, VisionTransformer, dinov3_backbone_config, load_pretrained
from clsvit_lightning.models.dinov3_keys import DINOv3Arch, dinov3_state_dict_shapes
from clsvit_lightning.models.rope import RopePositionEmbedding, rope_patch_tokens
from tests.models.dinov3_reference import random_state_dict

ARCH = DINOv3Arch(32, 3, 4, ffn_ratio=3, ffn_layer="swiglu", patch_size=8)  # 4 storage tokens, as released


def official_checkpoint(seed=0):
    return random_state_dict(dinov3_state_dict_shapes(ARCH), seed=seed)


def dinov3_model(state, **kwargs):
    model = VisionTransformer(**{**dinov3_backbone_config(ARCH, img_size=32), **kwargs})
    load_pretrained(model, state)
    return model.eval()


def cls_attention_by_hand(state, block, prefix, patches, grid):
    """[CLS]'s attention over all tokens of ``blocks[block]``: LayerNorm, masked qkv bias, RoPE on the patches."""
    tokens = torch.cat([prefix, patches], dim=1)
    key = f"blocks.{block}"
    normed = F.layer_norm(tokens, (32,), state[f"{key}.norm1.weight"], state[f"{key}.norm1.bias"], 1e-5)
    bias = state[f"{key}.attn.qkv.bias"] * state[f"{key}.attn.qkv.bias_mask"]
    q, k, _ = F.linear(normed, state[f"{key}.attn.qkv.weight"], bias).reshape(2, -1, 3, 4, 8).permute(2, 0, 3, 1, 4)
    sin, cos = RopePositionEmbedding(32, 4).eval()(*grid)
    q, k = rope_patch_tokens(q, k, sin, cos)
    return torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)[:, :, :1]  # [B, heads, 1, T]


@torch.no_grad()
def test_attention_statistics_include_the_rotation():
    state = official_checkpoint()
    model = dinov3_model(state)
    images = torch.randn(2, 3, 24, 40)  # not square: 3 x 5 patches
    analysis = analyze_backbone(model, images)
    assert analysis.report["model"]["position_encoding"] == "rope"
    assert analysis.report["model"]["ffn_layer"] == "swiglu" and analysis.report["model"]["num_registers"] == 4
    prefix, patches = model.prepare_tokens(images)
    expected, maps = stats.attention_statistics(cls_attention_by_hand(state, 0, prefix, patches, (3, 5)), 5)
    got = analysis.report["blocks"][0]["attention"]
    for name, values in expected.items():
        assert got[name] == pytest.approx(values, abs=1e-5), name
    torch.testing.assert_close(analysis.cls_attention[0], maps.reshape(2, 4, 3, 5), atol=1e-5, rtol=1e-5)
    # Without the rotation the map would differ: the test sees RoPE.
    _, unrotated = stats.attention_statistics(
        model.blocks[0].attn.attention_probs(*model.blocks[0].norm1(prefix, patches))[:, :, :1], 5
    )
    assert not torch.allclose(unrotated.reshape(2, 4, 3, 5), analysis.cls_attention[0], atol=1e-3)


@pytest.fixture
def workspace(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate([(40, 40), (50, 36)]):
        cv2.imwrite(str(images / f"{index}.png"), rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    ckpt = tmp_path / "dinov3_teacher.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in official_checkpoint().items()}}, ckpt)
    return tmp_path, ckpt


@pytest.mark.numerics  # the warm-started proposal computes the vanilla outputs bit for bit
def test_analyze_and_advise_an_official_dinov3_checkpoint(workspace, capsys):
    root, ckpt = workspace
    out = root / "out"
    result = run([
        "analyze", "--ckpt", str(ckpt), "--data", str(root / "images"), "--out", str(out), "--size", "dinov3_vits16",
        "--patch_size", "8", "--img_size", "32", "--attention_blocks", "[0, 2]",
        "--model_kwargs", "{embed_dim: 32, depth: 3, num_heads: 4, ffn_layer: swiglu, mlp_ratio: 3.0}",
    ])  # fmt: skip
    report = json.loads((out / "analysis.json").read_text())
    assert report_keys(report) == REPORT_KEYS
    assert report["model"]["num_registers"] == 4 and report["model"]["position_encoding"] == "rope"
    for name in ("similarity_vs_depth", "pca", "attention_block00", "attention_block02"):
        assert (out / f"{name}.png").stat().st_size > 1000
    proposal = result["advice"].spec
    Specialization.parse(proposal).blocks(3)
    assert proposal in capsys.readouterr().out
    # The proposal, warm-started from the same checkpoint, computes what the vanilla model computes.
    vanilla, proposed = (
        dinov3_model(official_checkpoint()),
        dinov3_model(official_checkpoint(), specialization=proposal),
    )
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(vanilla(images), proposed(images))


def test_the_advisor_reads_a_dinov3_report():
    report = analyze_backbone(dinov3_model(official_checkpoint()), torch.randn(2, 3, 32, 32)).report
    advice = advise(report)
    assert 0 < advice.overhead <= 0.085 and advice.ranking[0].score >= advice.ranking[-1].score
    qkv = next(c for c in advice.ranking if c.component == "qkv")
    assert qkv.extra_parameters == 3 * 32 * 32 + 3 * 32  # the masked key bias is still a parameter
