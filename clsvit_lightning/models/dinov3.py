"""DINOv3's backbones (Siméoni et al., 2025): the released sizes as ``VisionTransformer`` presets.

A DINOv3 ViT is this package's ``VisionTransformer`` built with DINOv3's options (the same blocks,
so every specialization applies), named as DINOv3's hub entry points (``dinov3/hub/backbones.py``)::

    dinov3_vits16      384/12/6    MLP 4x                  dinov3_vitl16plus  1024/24/16  SwiGLU, hidden 4096
    dinov3_vits16plus  384/12/6    SwiGLU, hidden 1536     dinov3_vith16plus  1280/32/20  SwiGLU, hidden 5120
    dinov3_vitb16      768/12/12   MLP 4x                  dinov3_vit7b16     4096/40/32  swiglu64, hidden 8192,
    dinov3_vitl16      1024/24/16  MLP 4x                                                 no qkv bias

All of them: patch 16, 4 storage tokens (the registers here), LayerScale 1e-5, LayerNorm eps 1e-5,
the key bias masked, RoPE with base 100 and ``"separate"`` coordinates in fp32, coordinates
rescaled by a log-uniform factor in [1/2, 2] in training. Each preset takes any
``VisionTransformer`` argument (``specialization="paper"``, ``drop_path_rate``, ``img_size``, ...).

Their checkpoints (official ``dinov3_<name>_pretrain_*.pth`` files or transformers'
``DINOv3ViTModel``) load with ``load_pretrained``; ``from_pretrained`` builds the model they hold.
"""

from __future__ import annotations

from typing import Any

from clsvit_lightning.models.dinov3_keys import DINOV3_ARCHS, DINOv3Arch
from clsvit_lightning.models.vision_transformer import VisionTransformer


def dinov3_backbone_config(arch: DINOv3Arch | str, img_size: int = 224, in_chans: int = 3) -> dict[str, Any]:
    """The ``VisionTransformer`` arguments of a DINOv3 architecture (a ``DINOv3Arch`` or a released name).

    An untied final norm (``untie_cls_and_patch_norms``) is the ``final_norm`` specialization, whose
    prefix path normalises [CLS] and the storage tokens as DINOv3's ``cls_norm`` does; the
    training-only ``local_cls_norm`` has no counterpart (``load_pretrained`` drops it).
    """
    if isinstance(arch, str):
        arch = DINOV3_ARCHS[arch.removeprefix("dinov3_")]
    specialization = "final_norm" if arch.untie_cls_and_patch_norms else "vanilla"
    return dict(
        img_size=img_size, patch_size=arch.patch_size, in_chans=in_chans, embed_dim=arch.embed_dim, depth=arch.depth,
        num_heads=arch.num_heads, mlp_ratio=float(arch.ffn_ratio), qkv_bias=arch.qkv_bias,
        num_registers=arch.n_storage_tokens, specialization=specialization,
        layerscale_init=arch.layerscale_init, position_encoding="rope", ffn_layer=arch.ffn_layer,
        norm_eps=arch.norm_eps, mask_k_bias=arch.mask_k_bias and arch.qkv_bias, rope_base=arch.rope_base,
        rope_normalize_coords=arch.rope_normalize_coords, rope_rescale_coords=arch.rope_rescale_coords,
        rope_dtype=arch.rope_dtype,
    )  # fmt: skip


def dinov3_vit(name: str, **kwargs: Any) -> VisionTransformer:
    """The released DINOv3 ViT ``name`` (``"vits16"`` or ``"dinov3_vits16"``, ...); ``kwargs`` override its options."""
    key = name.removeprefix("dinov3_")
    if key not in DINOV3_ARCHS:
        raise ValueError(f"unknown DINOv3 size {name!r}; choose from {sorted(DINOV3_SIZES)}")
    return VisionTransformer(**{**dinov3_backbone_config(key), **kwargs})


def dinov3_vits16(**kwargs: Any) -> VisionTransformer:
    return dinov3_vit("vits16", **kwargs)


def dinov3_vits16plus(**kwargs: Any) -> VisionTransformer:
    return dinov3_vit("vits16plus", **kwargs)


def dinov3_vitb16(**kwargs: Any) -> VisionTransformer:
    return dinov3_vit("vitb16", **kwargs)


def dinov3_vitl16(**kwargs: Any) -> VisionTransformer:
    return dinov3_vit("vitl16", **kwargs)


def dinov3_vitl16plus(**kwargs: Any) -> VisionTransformer:
    return dinov3_vit("vitl16plus", **kwargs)


def dinov3_vith16plus(**kwargs: Any) -> VisionTransformer:
    return dinov3_vit("vith16plus", **kwargs)


def dinov3_vit7b16(**kwargs: Any) -> VisionTransformer:
    return dinov3_vit("vit7b16", **kwargs)


DINOV3_SIZES = {
    "dinov3_vits16": dinov3_vits16,
    "dinov3_vits16plus": dinov3_vits16plus,
    "dinov3_vitb16": dinov3_vitb16,
    "dinov3_vitl16": dinov3_vitl16,
    "dinov3_vitl16plus": dinov3_vitl16plus,
    "dinov3_vith16plus": dinov3_vith16plus,
    "dinov3_vit7b16": dinov3_vit7b16,
}
