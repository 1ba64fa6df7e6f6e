"""DINOv3 backbones as data: the released sizes, their state-dict layout, and how to recognise one.

The official layout (``dinov3/models/vision_transformer.py: DinoVisionTransformer``; the hub
checkpoints of ``dinov3/hub/backbones.py`` load into it with ``strict=True``)::

    cls_token [1, 1, D]; storage_tokens [1, R, D]; mask_token [1, D]
    rope_embed.periods [head_dim / 4]                        (buffer; no pos_embed)
    patch_embed.proj.{weight [D, 3, p, p], bias [D]}
    blocks.{i}.norm1.{weight, bias}
    blocks.{i}.attn.qkv.weight [3D, D]                       (rows: q | k | v)
    blocks.{i}.attn.qkv.{bias, bias_mask} [3D]               (bias_mask: a buffer, 0 on the k third)
    blocks.{i}.attn.proj.{weight, bias}
    blocks.{i}.ls1.gamma [D]; blocks.{i}.norm2.{weight, bias}
    blocks.{i}.mlp.fc1/fc2.{weight, bias}  |  blocks.{i}.mlp.w1/w2/w3.{weight, bias}   (MLP | SwiGLU)
    blocks.{i}.ls2.gamma [D]
    norm.{weight, bias}; [cls_norm.{weight, bias}]; [local_cls_norm.{weight, bias}]

transformers' ``DINOv3ViTModel`` (``modeling_dinov3_vit.py``, converted by
``convert_dinov3_vit_to_hf.py``) renames it: ``embeddings.{cls_token, mask_token [1, 1, D],
register_tokens, patch_embeddings.{weight, bias}}``, ``layer.{i}.attention.{q,k,v,o}_proj`` (the
qkv thirds; no ``k_proj.bias``), ``layer.{i}.layer_scale{1,2}.lambda1``,
``layer.{i}.mlp.{up,down}_proj`` (MLP) or ``{gate,up,down}_proj`` (SwiGLU ``w1``, ``w2``, ``w3``),
``norm``; its RoPE periods are not saved and ``local_cls_norm`` is dropped. :func:`hf_to_dinov3`
maps it back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.rope import rope_periods
from clsvit_lightning.models.swiglu import SWIGLU_ALIGN, swiglu_hidden_features

FfnLayer = Literal["mlp", "swiglu", "swiglu32", "swiglu64", "swiglu128"]


@dataclass(frozen=True)
class DINOv3Arch:
    """One DINOv3 ViT: its size and the options shared by all released backbones (hub defaults)."""

    embed_dim: int
    depth: int
    num_heads: int
    ffn_ratio: float = 4.0
    ffn_layer: FfnLayer = "mlp"
    qkv_bias: bool = True
    patch_size: int = 16
    n_storage_tokens: int = 4
    mask_k_bias: bool = True  # the k third of the qkv bias is multiplied by 0
    layerscale_init: float | None = 1e-5
    norm_eps: float = 1e-5  # `layernormbf16`
    rope_base: float = 100.0
    rope_normalize_coords: str = "separate"
    rope_rescale_coords: float | None = 2.0  # training only
    rope_dtype: str = "fp32"
    untie_cls_and_patch_norms: bool = False  # cls_norm for [CLS] + storage tokens
    untie_global_and_local_cls_norm: bool = False  # local_cls_norm: training, local crops only

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def ffn_hidden_features(self) -> int:
        """The width of ``fc1`` (MLP) or of ``w1``/``w2`` (SwiGLU, after its 2/3 rule)."""
        hidden = int(self.embed_dim * self.ffn_ratio)
        return hidden if self.ffn_layer == "mlp" else swiglu_hidden_features(hidden, SWIGLU_ALIGN[self.ffn_layer])

    def describe(self) -> str:
        ffn = "MLP" if self.ffn_layer == "mlp" else f"SwiGLU ({self.ffn_layer})"
        return (
            f"embed_dim={self.embed_dim}, depth={self.depth}, num_heads={self.num_heads}, "
            f"patch_size={self.patch_size}, {self.n_storage_tokens} storage tokens, RoPE, "
            f"{ffn} hidden {self.ffn_hidden_features}, qkv_bias={self.qkv_bias}"
        )


# `dinov3/hub/backbones.py` (names as in the checkpoint files, `dinov3_<name>_pretrain_*.pth`).
DINOV3_ARCHS: dict[str, DINOv3Arch] = {
    "vits16": DINOv3Arch(384, 12, 6),
    "vits16plus": DINOv3Arch(384, 12, 6, ffn_ratio=6, ffn_layer="swiglu"),
    "vitb16": DINOv3Arch(768, 12, 12),
    "vitl16": DINOv3Arch(1024, 24, 16),  # the SAT-493M weights (hash eadcf0ff) also hold local_cls_norm
    "vitl16plus": DINOv3Arch(1024, 24, 16, ffn_ratio=6, ffn_layer="swiglu"),
    "vith16plus": DINOv3Arch(1280, 32, 20, ffn_ratio=6, ffn_layer="swiglu"),
    "vit7b16": DINOv3Arch(
        4096, 40, 32, ffn_ratio=3, ffn_layer="swiglu64", qkv_bias=False, untie_global_and_local_cls_norm=True
    ),
}


def dinov3_state_dict_shapes(arch: DINOv3Arch, in_chans: int = 3) -> dict[str, tuple[int, ...]]:
    """Every key of ``arch``'s official state dict, with its shape."""
    dim, hidden, patch = arch.embed_dim, arch.ffn_hidden_features, arch.patch_size
    shapes: dict[str, tuple[int, ...]] = {"cls_token": (1, 1, dim)}
    if arch.n_storage_tokens:
        shapes["storage_tokens"] = (1, arch.n_storage_tokens, dim)
    shapes["mask_token"] = (1, dim)
    shapes["rope_embed.periods"] = (arch.head_dim // 4,)
    shapes["patch_embed.proj.weight"] = (dim, in_chans, patch, patch)
    shapes["patch_embed.proj.bias"] = (dim,)
    ffn = {"fc1": (hidden, dim), "fc2": (dim, hidden)}
    if arch.ffn_layer != "mlp":
        ffn = {"w1": (hidden, dim), "w2": (hidden, dim), "w3": (dim, hidden)}
    for i in range(arch.depth):
        block = f"blocks.{i}"
        shapes |= {f"{block}.norm1.weight": (dim,), f"{block}.norm1.bias": (dim,)}
        shapes[f"{block}.attn.qkv.weight"] = (3 * dim, dim)
        if arch.qkv_bias:
            shapes[f"{block}.attn.qkv.bias"] = (3 * dim,)
            if arch.mask_k_bias:
                shapes[f"{block}.attn.qkv.bias_mask"] = (3 * dim,)
        shapes |= {f"{block}.attn.proj.weight": (dim, dim), f"{block}.attn.proj.bias": (dim,)}
        if arch.layerscale_init:
            shapes[f"{block}.ls1.gamma"] = (dim,)
        shapes |= {f"{block}.norm2.weight": (dim,), f"{block}.norm2.bias": (dim,)}
        for name, shape in ffn.items():
            shapes |= {f"{block}.mlp.{name}.weight": shape, f"{block}.mlp.{name}.bias": (shape[0],)}
        if arch.layerscale_init:
            shapes[f"{block}.ls2.gamma"] = (dim,)
    norms = (
        ["norm"]
        + ["cls_norm"] * arch.untie_cls_and_patch_norms
        + ["local_cls_norm"] * arch.untie_global_and_local_cls_norm
    )
    for norm in norms:
        shapes |= {f"{norm}.weight": (dim,), f"{norm}.bias": (dim,)}
    return shapes


_DINOV3_ONLY = ("storage_tokens", "rope_embed.periods")
_K_BIAS_MASK = re.compile(r"^blocks\.\d+\.attn\.qkv\.bias_mask$")
_HF_MARKERS = ("embeddings.register_tokens", "embeddings.patch_embeddings.weight")
_HF_LAYER = re.compile(r"^layer\.\d+\.(attention\.q_proj|layer_scale1\.lambda1)")


def dinov3_format(state: Mapping[str, object]) -> Literal["dinov3", "hf"] | None:
    """``"dinov3"`` for the official layout, ``"hf"`` for transformers' DINOv3ViTModel, else None.

    Keys may carry the wrappers' prefixes (``module.``, ``backbone.``, ``teacher.backbone.``).
    """
    keys = {re.sub(r"^(module\.)?(teacher\.)?(backbone\.)?(model\.(?=layer\.))?", "", key) for key in state}
    if any(key in keys for key in _DINOV3_ONLY) or any(_K_BIAS_MASK.match(key) for key in keys):
        return "dinov3"
    if any(key in keys for key in _HF_MARKERS) and any(_HF_LAYER.match(key) for key in keys):
        return "hf"
    return None


def infer_dinov3_arch(state: Mapping[str, Tensor]) -> tuple[str | None, DINOv3Arch]:
    """The architecture an official-layout state dict holds, and the released preset it matches (or None).

    Sizes come from the shapes (the head count from ``rope_embed.periods``: ``head_dim / 4``
    entries), the flags from which keys exist. A SwiGLU's ``align_to`` and ratio are taken from
    the preset when one matches, else written as ``ffn_layer="swiglu"`` with the ratio ``3h/2D``.
    """
    missing = [key for key in ("cls_token", "patch_embed.proj.weight", "rope_embed.periods") if key not in state]
    if missing:
        raise ConfigError(f"not a DINOv3 backbone state dict: no {missing}")
    dim = state["cls_token"].shape[-1]
    head_dim = 4 * state["rope_embed.periods"].shape[0]
    depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    swiglu = "blocks.0.mlp.w1.weight" in state
    hidden = state["blocks.0.mlp.w1.weight" if swiglu else "blocks.0.mlp.fc1.weight"].shape[0] if depth else 0
    storage = state.get("storage_tokens")
    arch = DINOv3Arch(
        embed_dim=dim,
        depth=depth,
        num_heads=dim // head_dim,
        ffn_ratio=hidden * (1.5 if swiglu else 1.0) / dim,
        ffn_layer="swiglu" if swiglu else "mlp",
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        patch_size=state["patch_embed.proj.weight"].shape[-1],
        n_storage_tokens=storage.shape[1] if storage is not None else 0,
        mask_k_bias="blocks.0.attn.qkv.bias_mask" in state or "blocks.0.attn.qkv.bias" not in state,
        layerscale_init=1e-5 if "blocks.0.ls1.gamma" in state else None,
        untie_cls_and_patch_norms="cls_norm.weight" in state,
        untie_global_and_local_cls_norm="local_cls_norm.weight" in state,
    )
    for name, preset in DINOV3_ARCHS.items():
        candidate = replace(
            preset,
            untie_cls_and_patch_norms=arch.untie_cls_and_patch_norms,
            untie_global_and_local_cls_norm=arch.untie_global_and_local_cls_norm,
        )
        if dinov3_state_dict_shapes(candidate) == {k: tuple(v.shape) for k, v in state.items()}:
            return name, candidate
    return None, arch


def hf_to_dinov3(
    state: Mapping[str, Tensor], num_heads: int | None = None, rope_base: float = 100.0
) -> dict[str, Tensor]:
    """A transformers ``DINOv3ViTModel`` state dict in the official layout (loadable with ``strict=True``).

    The k third of the qkv bias is filled with zeros and masked (``bias_mask``), as DINOv3 holds
    it (a model with ``key_bias=True`` keeps its key bias, unmasked); ``rope_embed.periods`` is
    rebuilt from ``rope_base`` and the head count, which an HF state dict does not record: give
    ``num_heads``, or leave it to the released size of that width. The layers may be under
    ``model.`` (transformers 5's names in memory) or not (its saved files).
    """
    state = {key.removeprefix("model.") if key.startswith("model.layer.") else key: v for key, v in state.items()}
    dim = state["embeddings.cls_token"].shape[-1]
    if num_heads is None:
        heads = {arch.num_heads for arch in DINOV3_ARCHS.values() if arch.embed_dim == dim}
        if len(heads) != 1:
            raise ConfigError(f"hf_to_dinov3: no released DINOv3 of width {dim}; give num_heads")
        num_heads = heads.pop()
    out: dict[str, Tensor] = {
        "cls_token": state["embeddings.cls_token"],
        "mask_token": state["embeddings.mask_token"].reshape(1, dim),  # HF: [1, 1, D]
        "rope_embed.periods": rope_periods(dim // num_heads, base=rope_base),
        "patch_embed.proj.weight": state["embeddings.patch_embeddings.weight"],
        "patch_embed.proj.bias": state["embeddings.patch_embeddings.bias"],
    }
    if "embeddings.register_tokens" in state and state["embeddings.register_tokens"].shape[1]:
        out["storage_tokens"] = state["embeddings.register_tokens"]
    layers = sorted({int(m.group(1)) for key in state if (m := re.match(r"^layer\.(\d+)\.", key))})
    for index in layers:
        hf, ours = f"layer.{index}", f"blocks.{index}"
        swiglu = f"{hf}.mlp.gate_proj.weight" in state
        ffn = (
            {"gate_proj": "w1", "up_proj": "w2", "down_proj": "w3"}
            if swiglu
            else {"up_proj": "fc1", "down_proj": "fc2"}
        )
        renames = {f"{hf}.mlp.{old}.": f"{ours}.mlp.{new}." for old, new in ffn.items()}
        renames |= {f"{hf}.{part}.": f"{ours}.{part}." for part in ("norm1", "norm2")}
        renames |= {
            f"{hf}.attention.o_proj.": f"{ours}.attn.proj.",
            f"{hf}.layer_scale1.lambda1": f"{ours}.ls1.gamma",
            f"{hf}.layer_scale2.lambda1": f"{ours}.ls2.gamma",
        }
        for key, value in state.items():
            for old, new in renames.items():
                if key.startswith(old):
                    out[new + key.removeprefix(old)] = value
        attention = f"{hf}.attention"
        out[f"{ours}.attn.qkv.weight"] = torch.cat([state[f"{attention}.{x}_proj.weight"] for x in "qkv"])  # [3D, D]
        if f"{attention}.q_proj.bias" in state:
            q_bias, v_bias = state[f"{attention}.q_proj.bias"], state[f"{attention}.v_proj.bias"]
            k_bias = state.get(f"{attention}.k_proj.bias", torch.zeros_like(q_bias))
            out[f"{ours}.attn.qkv.bias"] = torch.cat([q_bias, k_bias, v_bias])  # [3D]: q | k | v
            if f"{attention}.k_proj.bias" not in state:  # DINOv3's masked key bias (HF drops it)
                mask = torch.ones(3 * dim, dtype=q_bias.dtype)
                mask[dim : 2 * dim] = 0
                out[f"{ours}.attn.qkv.bias_mask"] = mask
    for norm in ("norm", "cls_norm", "local_cls_norm"):
        out |= {key: value for key, value in state.items() if key.startswith(f"{norm}.")}
    return out
