"""The DINOv3 backbone: ``VisionTransformer`` with RoPE, storage tokens, SwiGLU, the masked key bias and
eps 1e-5, checked against the independent float64 forward of ``dinov3_reference.py`` on random weights.

The model runs in fp32 and the reference in fp64. fp32 rounds each op to a relative 6e-8; over two
blocks of 32-wide dot products, a softmax and three LayerNorms the outputs (of order 1) differ by
at most ~2e-6 on either CPU kernel set (AVX-512 or ``ATEN_CPU_CAPABILITY=avx2``/``default``), so
``1e-5`` leaves a 5x margin and still catches a swapped parameter or a missing rotation (> 1e-2).
"""

import inspect

import pytest
import torch

from clsvit_lightning.models import (
    DINOV3_SIZES,
    CheckpointMismatchError,
    VisionTransformer,
    dinov3_backbone_config,
    dinov3_vits16,
    export_backbone,
    from_pretrained,
    load_pretrained,
)
from clsvit_lightning.models.block import rotate_patches_
from clsvit_lightning.models.dinov3_keys import DINOV3_ARCHS, DINOv3Arch, dinov3_state_dict_shapes
from clsvit_lightning.models.formats.dinov3 import clsvit_to_dinov3
from clsvit_lightning.models.formats.export import _dinov3_load_line
from clsvit_lightning.models.formats.sources import infer_backbone_config, select_backbone
from clsvit_lightning.models.rope import RopePositionEmbedding, rope_patch_tokens
from clsvit_lightning.models.swiglu import TokenSwiGLU
from clsvit_lightning.models.vision_transformer import _ROPE_DEFAULTS
from tests.models.dinov3_reference import random_state_dict, reference_forward

TOLERANCE = dict(atol=1e-5, rtol=1e-5)
PLAIN = DINOv3Arch(32, 2, 4, n_storage_tokens=2, patch_size=4)  # head_dim 8
SWIGLU = DINOv3Arch(32, 2, 4, ffn_ratio=3, ffn_layer="swiglu", n_storage_tokens=2, patch_size=4)
UNTIED = DINOv3Arch(
    32, 2, 4, n_storage_tokens=2, patch_size=4, untie_cls_and_patch_norms=True, untie_global_and_local_cls_norm=True
)
NO_QKV_BIAS = DINOv3Arch(32, 2, 2, ffn_ratio=3, ffn_layer="swiglu64", qkv_bias=False, patch_size=4)  # 7B-like
ARCHS = {"plain": PLAIN, "swiglu": SWIGLU, "untied_norms": UNTIED, "swiglu64_no_qkv_bias": NO_QKV_BIAS}
# The native grid (4 x 4 patches), a larger and a smaller one, non-square ones, a single patch.
IMAGE_SIZES = [(16, 16), (24, 24), (8, 8), (12, 20), (28, 8), (4, 4)]


def official_state(arch, seed=0):
    """An official-layout state dict with every value away from its init (norms ~1, LayerScale ~0.5)."""
    return random_state_dict(dinov3_state_dict_shapes(arch), seed=seed)


def build(arch, **kwargs):
    return VisionTransformer(**{**dinov3_backbone_config(arch, img_size=16), **kwargs}).eval()


def assert_matches_reference(out, ref):
    torch.testing.assert_close(out["x_norm_clstoken"].double(), ref["x_norm_clstoken"], **TOLERANCE)
    torch.testing.assert_close(out["x_norm_regtokens"].double(), ref["x_storage_tokens"], **TOLERANCE)
    torch.testing.assert_close(out["x_norm_patchtokens"].double(), ref["x_norm_patchtokens"], **TOLERANCE)
    torch.testing.assert_close(out["x_prenorm"].double(), ref["x_prenorm"], **TOLERANCE)


@pytest.mark.parametrize("size", IMAGE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(ARCHS))
def test_forward_matches_the_reference(name, size):
    arch = ARCHS[name]
    state = official_state(arch)
    model = build(arch)
    load_pretrained(model, state)
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        out = model.forward_features(images)
    assert_matches_reference(out, reference_forward(state, images))


@pytest.mark.parametrize("spec", ["paper", "norm1,qkv,proj,ls1,norm2,mlp,ls2:all;final_norm"])
@pytest.mark.parametrize("name", ["plain", "swiglu", "untied_norms"])
def test_a_specialized_model_warm_started_from_a_dinov3_checkpoint_matches_the_reference(name, spec):
    state = official_state(ARCHS[name])
    model = build(ARCHS[name], specialization=spec)
    report = load_pretrained(model, state)
    assert report.warm_started
    if name == "untied_norms":  # cls_norm became the final norm's prefix path, not a warm start
        assert "norm.prefix_weight" not in report.warm_started
        assert torch.equal(model.norm.prefix_weight, state["cls_norm.weight"])
    images = torch.randn(2, 3, 12, 20)
    with torch.no_grad():
        out = model.forward_features(images)
    assert_matches_reference(out, reference_forward(state, images))


def test_masked_patches_and_intermediate_layers_match_the_reference():
    state = official_state(SWIGLU)
    model = build(SWIGLU)
    load_pretrained(model, state)
    images = torch.randn(2, 3, 12, 16)
    masks = torch.zeros(2, 12, dtype=torch.bool)
    masks[0, [1, 5]] = masks[1, 7] = True
    ref = reference_forward(state, images, masks)
    with torch.no_grad():
        assert_matches_reference(model.forward_features(images, masks), ref)
        ((patches, cls),) = model.get_intermediate_layers(images, n=1, reshape=True, return_class_token=True)
    unmasked = reference_forward(state, images)
    torch.testing.assert_close(cls.double(), unmasked["x_norm_clstoken"], **TOLERANCE)
    expected = unmasked["x_norm_patchtokens"].reshape(2, 3, 4, 32).permute(0, 3, 1, 2)  # [B, D, h, w]
    torch.testing.assert_close(patches.double(), expected, **TOLERANCE)


def test_the_key_bias_is_masked_in_both_paths():
    model = build(PLAIN, specialization="qkv:all")
    load_pretrained(model, official_state(PLAIN))  # LayerScale ~0.5: the blocks count
    qkv = model.blocks[0].attn.qkv
    assert torch.equal(qkv.bias_mask, torch.cat([torch.ones(32), torch.zeros(32), torch.ones(32)]))
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = model.forward_features(images)["x_prenorm"]
        qkv.bias[32:64] += 5.0
        qkv.prefix_bias[32:64] -= 3.0
        torch.testing.assert_close(model.forward_features(images)["x_prenorm"], before, atol=0, rtol=0)
        qkv.prefix_bias[:32] += 1.0  # the query bias of the prefix path does matter
        assert not torch.allclose(model.forward_features(images)["x_prenorm"], before)


# ---------------------------------------------------------------------------------- training
def test_in_training_every_block_draws_its_own_rope_augmentation():
    model = build(PLAIN)  # rope_rescale_coords=2, as released
    images = torch.randn(1, 3, 16, 16)
    eval_ropes = list(model.block_ropes(images))
    assert all(rope is eval_ropes[0] for rope in eval_ropes)  # computed once
    model.train()
    train_ropes = list(model.block_ropes(images))
    assert not torch.equal(train_ropes[0][0], train_ropes[1][0])
    assert not torch.equal(train_ropes[0][0], eval_ropes[0][0])
    plain = build(PLAIN, rope_rescale_coords=None).train()  # nothing to draw: computed once, as in eval
    ropes = list(plain.block_ropes(images))
    assert ropes[0] is ropes[1] and torch.equal(ropes[0][0], eval_ropes[0][0])


@pytest.mark.parametrize("stochastic_depth", ["dinov2", "per_sample"])
def test_activation_checkpointing_gives_the_same_gradients_with_rope_augmentation(stochastic_depth):
    state = official_state(SWIGLU)
    models = []
    for checkpointing in (False, True):
        model = build(
            SWIGLU, drop_path_rate=0.5, stochastic_depth=stochastic_depth, activation_checkpointing=checkpointing
        )
        load_pretrained(model, state)
        models.append(model.train())
    images = torch.randn(4, 3, 12, 16)
    gradients = []
    for model in models:
        torch.manual_seed(3)  # the same rope draws and dropped samples in both
        out = model.forward_features(images)
        (out["x_norm_clstoken"].square().sum() + out["x_norm_patchtokens"].square().sum()).backward()
        gradients.append({name: p.grad for name, p in model.named_parameters()})
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, msg=name)
    assert gradients[0]["blocks.1.mlp.w3.weight"].abs().sum() > 0


def test_under_autocast_rope_runs_in_fp32_and_the_stream_stays_fp32():
    model = build(SWIGLU)
    images = torch.randn(2, 3, 12, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prefix, patches = model.prepare_tokens(images)
        sin, cos = next(model.block_ropes(images))
        out = model.forward_features(images)
    assert prefix.dtype == patches.dtype == torch.float32 and patches.is_contiguous()
    assert sin.dtype == cos.dtype == torch.float32
    with torch.no_grad():
        reference = model.forward_features(images)["x_norm_clstoken"]
    torch.testing.assert_close(out["x_norm_clstoken"].float(), reference, atol=0.1, rtol=0.1)  # bf16 matmuls


# ------------------------------------------------------------------------------------ layout
@pytest.mark.parametrize("name", list(DINOV3_SIZES))
def test_each_preset_has_the_official_layout_under_our_names(name):
    with torch.device("meta"):
        model = DINOV3_SIZES[name]()
    arch = DINOV3_ARCHS[name.removeprefix("dinov3_")]
    expected = {
        {"storage_tokens": "register_tokens"}.get(key, key): shape
        for key, shape in dinov3_state_dict_shapes(arch).items()
        if not key.startswith("local_cls_norm.")  # training only: dropped at load
    }
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert model.pos_embed is None and "pos_embed" not in model.state_dict()
    assert model.blocks[0].norm1.eps == model.norm.eps == 1e-5
    assert (model.rope_embed.base, model.rope_embed.rescale_coords, model.rope_embed.dtype) == (
        100.0,
        2.0,
        torch.float32,
    )
    assert isinstance(model.blocks[0].mlp, TokenSwiGLU) == (arch.ffn_layer != "mlp")


def test_the_configuration_round_trips_and_names_every_dinov3_option():
    model = dinov3_vits16(specialization="paper", drop_path_rate=0.1, rope_jitter_coords=1.5)
    rebuilt = VisionTransformer(**model.config)
    assert rebuilt.config == model.config
    assert model.config["position_encoding"] == "rope" and model.config["rope_jitter_coords"] == 1.5
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    learned = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    assert learned.config["position_encoding"] == "learned" and "rope_base" not in learned.config


def test_dinov3_init_draws_tokens_at_0_02_and_starts_prefix_twins_equal():
    torch.manual_seed(0)
    model = build(DINOv3Arch(384, 3, 6, n_storage_tokens=4), specialization="paper")
    assert 0.015 < model.cls_token.std() < 0.025 and 0.015 < model.register_tokens.std() < 0.025
    assert torch.equal(model.mask_token, torch.zeros(1, 384))
    assert torch.equal(model.blocks[0].attn.qkv.prefix_weight, model.blocks[0].attn.qkv.weight)
    dinov2 = VisionTransformer(img_size=32, patch_size=8, embed_dim=384, depth=1, num_heads=6, num_registers=4)
    assert dinov2.register_tokens.std() < 1e-5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(position_encoding="sine"), "position_encoding must be 'learned'"),
        (dict(ffn_layer="swiglu16"), "ffn_layer must be one of"),
        (dict(norm_eps=0.0), "norm_eps must be > 0"),
        (dict(qkv_bias=False, mask_k_bias=True), "needs qkv_bias=True"),
        (dict(embed_dim=24, num_heads=4), "head dimension divisible by 4"),
    ],
)
def test_bad_dinov3_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(PLAIN, **kwargs)


def test_rope_options_need_rope():
    with pytest.raises(ValueError, match=r"\['rope_rescale_coords'\] set for a learned position embedding"):
        VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, rope_rescale_coords=2.0)
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(VisionTransformer).parameters.items()
        if name.startswith("rope_")
    }
    assert defaults == _ROPE_DEFAULTS  # what "not given" means


# ------------------------------------------------------------------------------- load errors
def test_a_dinov3_checkpoint_into_a_dinov2_model_names_the_size_and_the_preset():
    with torch.device("meta"):
        dinov2 = VisionTransformer(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6)
    state = {k: torch.empty(s, device="meta") for k, s in dinov3_state_dict_shapes(DINOV3_ARCHS["vits16"]).items()}
    with pytest.raises(CheckpointMismatchError, match=r"this is a DINOv3 checkpoint \(vits16: embed_dim=384") as info:
        load_pretrained(dinov2, state)
    assert "build it with dinov3_vits16()" in str(info.value)


def test_a_dinov2_checkpoint_into_a_dinov3_model_says_so():
    dinov2 = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_registers=2)
    with pytest.raises(CheckpointMismatchError, match=r"this is a DINOv2 checkpoint \(a learned pos_embed"):
        load_pretrained(build(PLAIN), dinov2.state_dict())


@pytest.mark.parametrize(
    ("checkpoint_arch", "model_kwargs", "edit", "match"),
    [
        (PLAIN, {}, lambda s: s.pop("rope_embed.periods"), "lacks rope_embed.periods"),
        (SWIGLU, dict(ffn_layer="mlp"), None, r"uses a SwiGLU FFN \(mlp.w1/w2/w3"),
        (PLAIN, dict(ffn_layer="swiglu", mlp_ratio=3.0), None, "uses a GELU MLP"),
        (PLAIN, dict(mask_k_bias=False), None, "masks the key bias"),
        (PLAIN, dict(rope_base=10.0), None, r"RoPE periods \(rope_embed.periods \[1, 10\]\) differ"),
        (UNTIED, {}, None, "untied final norm cls_norm"),
        (UNTIED, dict(specialization="final_norm;registers_path:patch"), None, "registers_path:cls"),
    ],
    ids=["no-rope-periods", "swiglu-into-mlp", "mlp-into-swiglu", "bias-mask", "rope-base", "cls-norm", "registers"],
)
def test_mismatches_name_what_differs(checkpoint_arch, model_kwargs, edit, match):
    state = official_state(checkpoint_arch)
    if edit is not None:
        edit(state)
    with pytest.raises(CheckpointMismatchError, match=match):
        load_pretrained(build(PLAIN, **model_kwargs), state)


def test_the_training_only_local_cls_norm_is_dropped_and_reported():
    state = {f"backbone.{k}": v for k, v in official_state(UNTIED).items()}  # as in a DINOv3 training checkpoint
    state["dino_head.mlp.0.weight"] = torch.zeros(2, 2)
    report = load_pretrained(build(UNTIED), state)
    assert set(report.dropped) == {"dino_head.mlp.0.weight", "local_cls_norm.weight", "local_cls_norm.bias"}


# ------------------------------------------------------------------------- from_pretrained
def test_from_pretrained_builds_the_architecture_an_official_checkpoint_holds(tmp_path):
    state = official_state(UNTIED)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in state.items()}}, tmp_path / "dinov3_teacher.pth")
    model = from_pretrained(tmp_path / "dinov3_teacher.pth")
    assert model.config == VisionTransformer(**dinov3_backbone_config(UNTIED)).config
    assert model.config["specialization"] == "final_norm" and model.config["ffn_layer"] == "mlp"
    assert model.load_report.dropped == ["local_cls_norm.bias", "local_cls_norm.weight"]
    images = torch.randn(2, 3, 12, 20)
    with torch.no_grad():
        assert_matches_reference(model.forward_features(images), reference_forward(state, images))


@pytest.mark.parametrize("name", list(DINOV3_ARCHS))
def test_the_configuration_of_every_released_size_is_read_off_its_keys(name):
    state = {k: torch.empty(s, device="meta") for k, s in dinov3_state_dict_shapes(DINOV3_ARCHS[name]).items()}
    backbone, _ = select_backbone(state, None, name)
    assert infer_backbone_config(backbone, name, {}) == dinov3_backbone_config(name)


def test_an_exported_dinov3_backbone_round_trips_its_configuration(tmp_path):
    model = build(SWIGLU, specialization="paper", rope_jitter_coords=1.2)
    load_pretrained(model, official_state(SWIGLU))
    for format, file in (("clsvit", "backbone.pth"), ("safetensors", "backbone.safetensors")):
        export_backbone(model, tmp_path / file, format)
        restored = from_pretrained(tmp_path / file)
        assert restored.config == model.config
        images = torch.randn(1, 3, 20, 12)
        with torch.no_grad():
            assert torch.equal(restored(images), model(images))
    for format in ("dinov2", "timm", "hf"):
        with pytest.raises(ValueError, match="DINOv3 \\(RoPE\\) backbone"):
            export_backbone(build(PLAIN), tmp_path / "foreign", format)


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_in_place_rotation_is_dinov3s_rope_apply_bit_for_bit(dtype):
    """``rotate_patches_`` rewrites ``x cos + rotate_half(x) sin`` on the half-rows; the bits are the same."""
    qkv = torch.randn(3, 2, 4, 3 + 20, 8).to(dtype)  # [3, B, heads, P + N, head_dim], 3 prefix tokens
    sin, cos = RopePositionEmbedding(32, 4).eval()(4, 5)  # fp32, as released
    q, k = rope_patch_tokens(qkv[0], qkv[1], sin, cos)  # phase-1 rope.py: DINOv3's apply_rope
    rotate_patches_(qkv, 3, (sin, cos))
    assert torch.equal(qkv[0], q) and torch.equal(qkv[1], k)


@pytest.mark.parametrize("name", ["plain", "untied_norms"])
def test_export_to_dinov3s_layout_gives_the_official_keys_and_the_same_function(tmp_path, name):
    state = official_state(ARCHS[name])
    model = build(ARCHS[name])
    load_pretrained(model, state)
    info = export_backbone(model, tmp_path / "dinov3.pth", "dinov3")
    written = torch.load(tmp_path / "dinov3.pth", weights_only=True)
    official = {k for k in state if not k.startswith("local_cls_norm.")}  # training only: not ours to write
    assert set(written) == official and info["load"].startswith("DINOv3's DinoVisionTransformer(embed_dim=32")
    images = torch.randn(2, 3, 12, 20)
    with torch.no_grad():
        assert_matches_reference(model.forward_features(images), reference_forward(written, images))
    with pytest.raises(ValueError, match="DinoVisionTransformer has no such architecture"):
        export_backbone(build(PLAIN, specialization="paper"), tmp_path / "paper.pth", "dinov3")
    with pytest.raises(ValueError, match="export it with --format dinov2"):
        learned = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=4)
        export_backbone(learned, tmp_path / "dinov2.pth", "dinov3")


def test_the_dinov3_export_names_the_hub_entry_of_a_released_size():
    with torch.device("meta"):
        state = dinov3_vits16().state_dict()
    line = _dinov3_load_line(clsvit_to_dinov3(state), "vits16.pth")
    assert line == "torch.hub.load('<dinov3 checkout>', 'dinov3_vits16', source='local', weights='vits16.pth')"
