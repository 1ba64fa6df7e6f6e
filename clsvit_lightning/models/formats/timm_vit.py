"""This backbone -> timm's ``VisionTransformer`` as its DINOv2 models build it.

timm's ``vit_{small,base,large}_patch14_dinov2`` share DINOv2's block names (``blocks.{i}.norm1``,
``attn.qkv``, ``attn.proj``, ``ls1.gamma``, ``mlp.fc1``, ...), so only the token embeddings move.
Without registers the layouts are the same (timm has no ``mask_token``). The ``_reg4_`` models are
built with ``no_embed_class=True`` (timm's ``_convert_dinov2`` in ``vision_transformer.py``): the
registers are ``reg_token``, [CLS]'s position is folded into ``cls_token`` and ``pos_embed``
covers the patches alone::

    cls_token + pos_embed[:, :1]  -> cls_token
    pos_embed[:, 1:]              -> pos_embed [1, N, D]
    register_tokens               -> reg_token

The giant (``vit_giant_patch14_dinov2``) has DINOv2's packed SwiGLU under MLP names: ``mlp.fc1``
is ``cat([w1, w2])`` (gate first), ``mlp.fc2`` is ``w3``.

Both models then compute the same function at the exported resolution (``img_size``); timm resizes
position embeddings without DINOv2's 0.1 offset, so other resolutions differ slightly. Reading
goes the other way through ``load_pretrained``, which knows timm's names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.swiglu import pack_w12, swiglu_hidden_features

# timm's DINOv2 presets (vit_*_patch14_dinov2): embed_dim, depth, heads. Its giant is the SwiGLU model.
_TIMM_SIZES = {"small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}
_TIMM_GIANT = (1536, 40, 24)
_TIMM_GIANT_MLP_RATIO = 2.66667 * 2  # its SwiGLUPacked fc1 width: int(1536 * 5.33334) = 8192 = 2 x 4096
_BLOCK_PARAMETERS = (
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
    "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
    "ls2.gamma", "mlp.w12.weight", "mlp.w12.bias", "mlp.w3.weight", "mlp.w3.bias",
)  # fmt: skip
_SWIGLU_KEY = re.compile(r"^(blocks\.\d+\.mlp\.)(w12|w3)\.")
_TOP_LEVEL = ("cls_token", "pos_embed", "register_tokens", "mask_token", "patch_embed.proj.weight")
_TOP_LEVEL += ("patch_embed.proj.bias", "norm.weight", "norm.bias")


def check_dinov2_layout(state: Mapping[str, Tensor], library: str) -> None:
    """Raise :class:`ConfigError` listing the keys of ``state`` that DINOv2's plain ViT has no place for."""
    unplaced = [
        key
        for key in state
        if key not in _TOP_LEVEL and not (key.startswith("blocks.") and key.split(".", 2)[-1] in _BLOCK_PARAMETERS)
    ]
    if unplaced:
        raise ConfigError(f"{library} has no parameter for {', '.join(sorted(unplaced)[:10])}")


def dinov2_to_timm(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our vanilla names -> timm's; raises :class:`ConfigError` listing keys timm has no place for.

    A SwiGLU backbone (DINOv2's giant) goes to timm's ``SwiGLUPacked``: ``cat([w1, w2])`` -> ``mlp.fc1``,
    ``w3`` -> ``mlp.fc2`` (timm's ``_convert_dinov2`` renames DINOv2's ``w12``/``w3`` the same way).
    """
    state = pack_w12(state)
    check_dinov2_layout(state, "timm's DINOv2 VisionTransformer")
    swiglu_names = {"w12": "fc1", "w3": "fc2"}
    state = {_SWIGLU_KEY.sub(lambda m: f"{m[1]}{swiglu_names[m[2]]}.", k): v for k, v in state.items()}
    out = {k: v for k, v in state.items() if k not in ("mask_token", "register_tokens")}
    registers = state.get("register_tokens")
    if registers is not None and registers.shape[1] > 0:  # timm's no_embed_class layout of the _reg4_ models
        out["reg_token"] = registers
        out["cls_token"] = state["cls_token"] + state["pos_embed"][:, :1]
        out["pos_embed"] = state["pos_embed"][:, 1:].contiguous()
    return out


def timm_model_arguments(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(model name, keyword arguments)`` for ``timm.create_model`` that build this backbone.

    The name is timm's DINOv2 model of the same size (``vit_small_patch14_reg4_dinov2``, ...; a
    SwiGLU backbone is a ``vit_giant_patch14_dinov2``); the arguments are ``img_size`` and whatever
    differs from that model (patch size, width, depth, register count, no LayerScale).
    """
    registers = int(config["num_registers"])
    dims = (config["embed_dim"], config["depth"], config["num_heads"])
    swiglu = config.get("ffn_layer", "mlp") == "swiglu"
    if swiglu:  # timm builds DINOv2's SwiGLU in its giant only, whose fc1 width follows from embed_dim
        width, packed = (
            int(config["embed_dim"]),
            2 * swiglu_hidden_features(int(config["embed_dim"] * config["mlp_ratio"])),
        )
        if int(width * _TIMM_GIANT_MLP_RATIO) != packed:
            raise ConfigError(
                f"timm builds DINOv2's SwiGLU FFN in its giant only, whose fc1 has int(embed_dim * "
                f"{_TIMM_GIANT_MLP_RATIO}) = {int(width * _TIMM_GIANT_MLP_RATIO)} rows; this backbone's packed w1, w2 "
                f"have {packed} (embed_dim {width}, mlp_ratio {config['mlp_ratio']}): export it with --format clsvit, "
                "safetensors, dinov2 or hf"
            )
    sizes = {"giant": _TIMM_GIANT} if swiglu else _TIMM_SIZES
    size = next((name for name, preset in sizes.items() if preset == dims), next(iter(sizes)))
    name = f"vit_{size}_patch14_{'reg4_' if registers else ''}dinov2"
    kwargs: dict[str, Any] = {"img_size": config["img_size"]}
    preset = dict(zip(("embed_dim", "depth", "num_heads"), sizes[size], strict=True))
    # timm's giant states its packed SwiGLU width as its own mlp_ratio, checked above to give the same width.
    preset.update(patch_size=14, mlp_ratio=config["mlp_ratio"] if swiglu else 4.0, qkv_bias=True, in_chans=3)
    for key, default in preset.items():
        if config.get(key, default) != default:
            kwargs[key] = config[key]
    if not config.get("layerscale_init"):
        kwargs["init_values"] = 0.0  # timm: no LayerScale (create_model drops None-valued arguments)
    if registers and registers != 4:
        kwargs["reg_tokens"] = registers
    return name, kwargs


def timm_create_model_call(config: Mapping[str, Any], path: str) -> str:
    """The Python line that loads an exported file with timm (printed by ``clsvit export``)."""
    name, kwargs = timm_model_arguments(config)
    arguments = "".join(f", {key}={value!r}" for key, value in kwargs.items())
    return f"timm.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict(file={path!r}){arguments})"
