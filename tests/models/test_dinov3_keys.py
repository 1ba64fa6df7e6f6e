"""DINOv3 sizes and state-dict layout as data (``models/dinov3_keys.py``)."""

import pytest
import torch

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.dinov3_keys import (
    DINOV3_ARCHS,
    DINOv3Arch,
    dinov3_format,
    dinov3_state_dict_shapes,
    hf_to_dinov3,
    infer_dinov3_arch,
)
from tests.models.dinov3_reference import random_state_dict, reference_forward


def meta_state(arch):
    """A state dict of the right shapes that allocates nothing (the 7B one included)."""
    return {k: torch.empty(shape, device="meta") for k, shape in dinov3_state_dict_shapes(arch).items()}


@pytest.mark.parametrize(
    ("name", "dims", "ffn_layer", "hidden"),
    [
        ("vits16", (384, 12, 6), "mlp", 1536),
        ("vits16plus", (384, 12, 6), "swiglu", 1536),
        ("vitb16", (768, 12, 12), "mlp", 3072),
        ("vitl16", (1024, 24, 16), "mlp", 4096),
        ("vitl16plus", (1024, 24, 16), "swiglu", 4096),
        ("vith16plus", (1280, 32, 20), "swiglu", 5120),
        ("vit7b16", (4096, 40, 32), "swiglu64", 8192),
    ],
)
def test_released_sizes(name, dims, ffn_layer, hidden):
    arch = DINOV3_ARCHS[name]
    assert (arch.embed_dim, arch.depth, arch.num_heads) == dims
    assert arch.ffn_layer == ffn_layer and arch.ffn_hidden_features == hidden
    assert arch.head_dim == (128 if name == "vit7b16" else 64)
    assert arch.qkv_bias == (name != "vit7b16")


def test_options_shared_by_all_released_backbones():
    for arch in DINOV3_ARCHS.values():
        assert (arch.patch_size, arch.n_storage_tokens, arch.mask_k_bias, arch.layerscale_init) == (16, 4, True, 1e-5)
        assert (arch.norm_eps, arch.rope_base, arch.rope_normalize_coords) == (1e-5, 100.0, "separate")
        assert (arch.rope_rescale_coords, arch.rope_dtype, arch.untie_cls_and_patch_norms) == (2.0, "fp32", False)
    assert [n for n, a in DINOV3_ARCHS.items() if a.untie_global_and_local_cls_norm] == ["vit7b16"]


def test_state_dict_layout_of_vits16():
    shapes = dinov3_state_dict_shapes(DINOV3_ARCHS["vits16"])
    assert list(shapes)[:6] == [
        "cls_token", "storage_tokens", "mask_token", "rope_embed.periods", "patch_embed.proj.weight",
        "patch_embed.proj.bias",
    ]  # fmt: skip
    assert shapes["storage_tokens"] == (1, 4, 384) and shapes["mask_token"] == (1, 384)
    assert shapes["rope_embed.periods"] == (16,) and shapes["patch_embed.proj.weight"] == (384, 3, 16, 16)
    block = {k.removeprefix("blocks.0."): v for k, v in shapes.items() if k.startswith("blocks.0.")}
    assert block == {
        "norm1.weight": (384,), "norm1.bias": (384,),
        "attn.qkv.weight": (1152, 384), "attn.qkv.bias": (1152,), "attn.qkv.bias_mask": (1152,),
        "attn.proj.weight": (384, 384), "attn.proj.bias": (384,), "ls1.gamma": (384,),
        "norm2.weight": (384,), "norm2.bias": (384,),
        "mlp.fc1.weight": (1536, 384), "mlp.fc1.bias": (1536,), "mlp.fc2.weight": (384, 1536), "mlp.fc2.bias": (384,),
        "ls2.gamma": (384,),
    }  # fmt: skip
    assert len(shapes) == 6 + 12 * 15 + 2 and "pos_embed" not in shapes and "cls_norm.weight" not in shapes


def test_state_dict_layout_of_vit7b16():
    shapes = dinov3_state_dict_shapes(DINOV3_ARCHS["vit7b16"])
    assert "blocks.0.attn.qkv.bias" not in shapes and "blocks.0.attn.qkv.bias_mask" not in shapes  # no qkv bias
    assert shapes["blocks.39.mlp.w1.weight"] == (8192, 4096) and shapes["blocks.39.mlp.w3.weight"] == (4096, 8192)
    assert shapes["rope_embed.periods"] == (32,)  # 128-dim heads
    assert shapes["local_cls_norm.weight"] == (4096,) and "cls_norm.weight" not in shapes
    assert len(shapes) == 6 + 40 * 15 + 4


@pytest.mark.parametrize("name", list(DINOV3_ARCHS))
def test_infer_names_every_released_size(name):
    found, arch = infer_dinov3_arch(meta_state(DINOV3_ARCHS[name]))
    assert found == name and arch == DINOV3_ARCHS[name]


def test_infer_reads_the_untied_norms_and_unreleased_sizes():
    sat_large = DINOv3Arch(1024, 24, 16, untie_global_and_local_cls_norm=True)  # the SAT-493M weights
    found, arch = infer_dinov3_arch(meta_state(sat_large))
    assert found == "vitl16" and arch.untie_global_and_local_cls_norm
    tiny = DINOv3Arch(32, 2, 4, ffn_ratio=3, ffn_layer="swiglu", n_storage_tokens=2, untie_cls_and_patch_norms=True)
    found, arch = infer_dinov3_arch(meta_state(tiny))
    assert found is None
    assert (arch.embed_dim, arch.depth, arch.num_heads, arch.n_storage_tokens) == (32, 2, 4, 2)
    assert arch.ffn_hidden_features == tiny.ffn_hidden_features and arch.untie_cls_and_patch_norms
    with pytest.raises(ConfigError, match="not a DINOv3 backbone"):
        infer_dinov3_arch({"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 5, 8)})


def test_format_recognises_dinov3_hf_and_neither():
    state = meta_state(DINOV3_ARCHS["vitb16"])
    assert dinov3_format(state) == "dinov3"
    assert dinov3_format({f"backbone.{k}": v for k, v in state.items()}) == "dinov3"
    assert dinov3_format({f"teacher.backbone.{k}": v for k, v in state.items()}) == "dinov3"
    dinov2 = {"cls_token": 0, "pos_embed": 0, "register_tokens": 0, "blocks.0.attn.qkv.bias": 0, "norm.weight": 0}
    assert dinov3_format(dinov2) is None
    assert dinov3_format(to_hf(random_state_dict(dinov3_state_dict_shapes(TINY)))) == "hf"


# -------------------------------------------------------------- transformers
def to_hf(state):
    """transformers' conversion (``convert_dinov3_vit_to_hf.py``), written out for the round trip."""
    renames = [
        ("cls_token", "embeddings.cls_token"), ("mask_token", "embeddings.mask_token"),
        ("storage_tokens", "embeddings.register_tokens"), ("patch_embed.proj", "embeddings.patch_embeddings"),
        ("attn.proj", "attention.o_proj"), ("ls1.gamma", "layer_scale1.lambda1"), ("ls2.gamma", "layer_scale2.lambda1"),
        ("mlp.fc1", "mlp.up_proj"), ("mlp.fc2", "mlp.down_proj"),
        ("mlp.w1", "mlp.gate_proj"), ("mlp.w2", "mlp.up_proj"), ("mlp.w3", "mlp.down_proj"),
    ]  # fmt: skip
    out = {}
    for key, value in state.items():
        if key.endswith("bias_mask") or key.startswith("local_cls_norm") or key == "rope_embed.periods":
            continue
        if ".attn.qkv." in key:
            for name, third in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3), strict=True):
                if not (name == "k_proj" and key.endswith("bias")):  # HF has no key bias
                    out[key.replace("attn.qkv", f"attention.{name}").replace("blocks.", "layer.")] = third
            continue
        for old, new in renames:
            key = key.replace(old, new)
        out[key.replace("blocks.", "layer.")] = value
    out["embeddings.mask_token"] = out["embeddings.mask_token"].unsqueeze(1)  # [1, 1, D]
    return out


TINY = DINOv3Arch(32, 2, 4, n_storage_tokens=2, patch_size=4)


@pytest.mark.parametrize(
    "arch",
    [
        TINY,
        DINOv3Arch(32, 2, 4, ffn_ratio=3, ffn_layer="swiglu", patch_size=4),
        DINOv3Arch(32, 1, 2, qkv_bias=False, patch_size=4),
    ],
    ids=["mlp", "swiglu", "no-qkv-bias"],
)
def test_hf_state_dict_converts_back_to_the_same_function(arch):
    state = random_state_dict(dinov3_state_dict_shapes(arch), base=100.0)
    back = hf_to_dinov3(to_hf(state), num_heads=arch.num_heads)
    assert {k: tuple(v.shape) for k, v in back.items()} == dinov3_state_dict_shapes(arch)
    for key, value in back.items():
        if key.endswith("attn.qkv.bias"):  # the k third comes back as zeros, masked as before
            torch.testing.assert_close(value * back[key + "_mask"], state[key] * state[key + "_mask"])
        else:
            torch.testing.assert_close(value, state[key], msg=key)
    images = torch.randn(2, 3, 8, 12)
    for output in ("x_norm_clstoken", "x_norm_patchtokens"):
        torch.testing.assert_close(reference_forward(back, images)[output], reference_forward(state, images)[output])


def test_hf_conversion_needs_the_head_count_of_an_unreleased_width():
    hf = to_hf(random_state_dict(dinov3_state_dict_shapes(TINY)))
    with pytest.raises(ConfigError, match="give num_heads"):
        hf_to_dinov3(hf)
    released = to_hf({k: torch.zeros(v) for k, v in dinov3_state_dict_shapes(DINOv3Arch(384, 1, 6)).items()})
    assert hf_to_dinov3(released)["rope_embed.periods"].shape == (16,)  # 384 wide: vits16's 6 heads
