"""transformers' DINOv3 (``DINOv3ViTModel``, ``model_type: dinov3_vit``) -> this backbone's configuration.

The weights map through :func:`~clsvit_lightning.models.dinov3_keys.hf_to_dinov3` (DINOv3's
official names; ``formats/dinov3.py`` takes them on to ours). ``config.json`` gives the rest::

    hidden_size / num_hidden_layers / num_attention_heads   embed_dim / depth / num_heads
    intermediate_size, use_gated_mlp                        mlp_ratio, ffn_layer ("mlp" | "swiglu")
    num_register_tokens                                     num_registers (DINOv3's storage tokens)
    query_bias, key_bias, value_bias                        qkv_bias, mask_k_bias (= no key bias)
    layer_norm_eps, layerscale_value                        norm_eps, layerscale_init
    rope_theta, pos_embed_{shift,jitter,rescale}            rope_base, rope_{shift,jitter,rescale}_coords

transformers' RoPE multiplies by ``1 / period`` where DINOv3 divides by the period, so the two
agree to float rounding, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.swiglu import swiglu_hidden_features

MODEL_TYPE = "dinov3_vit"
# DINOv3ViTConfig's defaults, which a config.json may leave out.
_DEFAULTS = {
    "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536,
    "hidden_act": "gelu", "layer_norm_eps": 1e-5, "image_size": 224, "patch_size": 16, "num_channels": 3,
    "num_register_tokens": 0, "query_bias": True, "key_bias": False, "value_bias": True, "proj_bias": True,
    "mlp_bias": True, "layerscale_value": 1.0, "rope_theta": 100.0, "pos_embed_shift": None,
    "pos_embed_jitter": None, "pos_embed_rescale": 2.0, "use_gated_mlp": False,
}  # fmt: skip


def backbone_config_from_hf_dinov3(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The ``VisionTransformer`` arguments equivalent to a transformers DINOv3 ``config.json``."""
    if config.get("model_type") != MODEL_TYPE:
        raise ConfigError(
            f"{source} describes a model_type={config.get('model_type')!r} model; expected {MODEL_TYPE!r}"
        )
    get = lambda name: config.get(name, _DEFAULTS[name])
    dim, gated = int(get("hidden_size")), bool(get("use_gated_mlp"))
    activation = "silu" if gated else "gelu"
    if get("hidden_act") != activation:
        raise ConfigError(
            f"{source}: hidden_act={get('hidden_act')!r} with use_gated_mlp={gated}; this backbone computes "
            f"{'SwiGLU (silu)' if gated else 'an MLP with exact GELU'}"
        )
    if not (get("proj_bias") and get("mlp_bias")) or get("query_bias") != get("value_bias"):
        raise ConfigError(
            f"{source}: proj_bias={get('proj_bias')}, mlp_bias={get('mlp_bias')}, query_bias={get('query_bias')}, "
            f"value_bias={get('value_bias')}; this backbone has biases on proj and the FFN, and on q and v alike"
        )
    qkv_bias = bool(get("query_bias"))
    hidden = int(get("intermediate_size"))
    # SwiGLU: the hidden size is 2/3 of int(dim * mlp_ratio), rounded up to 8 (swiglu_hidden_features).
    mlp_ratio = hidden * 1.5 / dim if gated else hidden / dim
    built = swiglu_hidden_features(int(dim * mlp_ratio)) if gated else int(dim * mlp_ratio)
    if built != hidden:
        raise ConfigError(f"{source}: intermediate_size={hidden} is not a hidden size this backbone builds for {dim}")
    patch_size = _single(get("patch_size"), "patch_size", source)
    image_size = get("image_size")  # with RoPE, only the default resolution of FLOP counts
    image_size = int(image_size[0] if isinstance(image_size, (list, tuple)) else image_size)
    return dict(
        img_size=max(image_size - image_size % patch_size, patch_size), patch_size=patch_size,
        in_chans=int(get("num_channels")), embed_dim=dim, depth=int(get("num_hidden_layers")),
        num_heads=int(get("num_attention_heads")), mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
        num_registers=int(get("num_register_tokens")), specialization="vanilla",
        layerscale_init=float(get("layerscale_value")) or 1.0, position_encoding="rope",
        ffn_layer="swiglu" if gated else "mlp", norm_eps=float(get("layer_norm_eps")),
        mask_k_bias=qkv_bias and not get("key_bias"), rope_base=float(get("rope_theta")),
        rope_shift_coords=get("pos_embed_shift"), rope_jitter_coords=get("pos_embed_jitter"),
        rope_rescale_coords=get("pos_embed_rescale"),
    )  # fmt: skip


def _single(size: object, name: str, source: str) -> int:
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ConfigError(f"{source}: {name}={list(size)}; this backbone takes square patches")
        size = size[0]
    return int(size)  # type: ignore[arg-type]
