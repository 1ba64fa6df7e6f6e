"""Write a backbone for this project or for another library (what ``clsvit export`` does).

=============  =====================================================  ==============================
format         what is written                                        loads with
=============  =====================================================  ==============================
``clsvit``     torch file ``{"model": state dict, "backbone_config"}``  ``from_pretrained``, hub
``safetensors`` our keys, ``backbone_config`` JSON in the metadata     ``from_pretrained``, hub
``dinov2``     a bare state dict in DINOv2's layout (= ours)           DINOv2's ``vision_transformer``
``timm``       timm's layout (torch file, or ``.safetensors`` by name)  ``timm.create_model(...)``
``hf``         a folder: ``config.json`` + ``model.safetensors``         ``Dinov2Model.from_pretrained``
``dinov3``     a bare state dict in DINOv3's official layout            DINOv3's ``DinoVisionTransformer``
=============  =====================================================  ==============================

The foreign formats describe DINOv2's or DINOv3's architecture, which has one set of parameters per
sub-layer: a specialized backbone (its [CLS]/register tokens have their own) is refused for them,
with a message pointing to ``clsvit`` and ``safetensors``, which carry the specialization. The one
split DINOv3 has, its untied final norm (``cls_norm``), goes to ``dinov3`` as ``cls_norm``. A
DINOv3 (RoPE) backbone goes to ``dinov3``; a learned position embedding to the DINOv2 formats.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.formats.dinov3 import clsvit_to_dinov3, dinov3_arch_of
from clsvit_lightning.models.formats.hf_dinov2 import write_hf_folder
from clsvit_lightning.models.formats.safetensors_file import write_safetensors
from clsvit_lightning.models.formats.sources import METADATA_CONFIG_KEY
from clsvit_lightning.models.formats.timm_vit import check_dinov2_layout, dinov2_to_timm, timm_create_model_call
from clsvit_lightning.models.specialization import Specialization
from clsvit_lightning.models.swiglu import pack_w12
from clsvit_lightning.models.vision_transformer import VisionTransformer

FORMATS = ("clsvit", "safetensors", "dinov2", "timm", "hf", "dinov3")
_FOREIGN = {
    "dinov2": "DINOv2's VisionTransformer",
    "timm": "timm's VisionTransformer",
    "hf": "transformers' Dinov2Model",
    "dinov3": "DINOv3's DinoVisionTransformer",
}


class SpecializedExportError(ConfigError):
    """A specialized backbone asked for a format whose library has no such architecture."""


def export_backbone(model: VisionTransformer, out: str | os.PathLike, format: str = "clsvit") -> dict[str, Any]:
    """Write ``model``'s weights to ``out`` in ``format`` (see the table above); returns a summary
    with ``out``, ``format``, ``keys``, ``params``, ``config`` and ``load`` (how to load it)."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; expected one of {list(FORMATS)}")
    if format in _FOREIGN and (model.rope_embed is not None) != (format == "dinov3"):
        kind = "a DINOv3 (RoPE) backbone" if model.rope_embed is not None else "a backbone with a learned pos_embed"
        raise ConfigError(
            f"the backbone is {kind}, and {_FOREIGN[format]} encodes positions the other way; export it with "
            f"--format {'dinov3' if model.rope_embed is not None else 'dinov2'}, clsvit or safetensors"
        )
    # DINOv3's one split: the untied final norm (cls_norm) for [CLS] and the storage tokens.
    dinov3_split = model.spec == Specialization(final_norm=True)
    if format in _FOREIGN and not model.spec.is_vanilla() and not (format == "dinov3" and dinov3_split):
        raise SpecializedExportError(
            f"the backbone is specialized ({model.spec.to_string()!r}: its [CLS]/register tokens have their own "
            f"parameters in some sub-layers), and {_FOREIGN[format]} has no such architecture; export it with "
            "--format clsvit (torch file) or --format safetensors (the specialization in its metadata), both read by "
            "clsvit_lightning.models.from_pretrained and the hubconf entry points"
        )
    ffn_layer = model.config.get("ffn_layer", "mlp")
    if format in ("dinov2", "timm", "hf") and ffn_layer not in ("mlp", "swiglu"):
        raise ConfigError(
            f"the backbone's FFN is {ffn_layer!r}; {_FOREIGN[format]} builds an MLP or DINOv2's SwiGLU (hidden size "
            "rounded to a multiple of 8, ffn_layer='swiglu'): export it with --format clsvit or safetensors"
        )
    out = Path(out)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    config = dict(model.config)
    if format != "hf":
        out.parent.mkdir(parents=True, exist_ok=True)
    if format == "clsvit":
        torch.save({"model": state, "backbone_config": config}, out)
        load = f"clsvit_lightning.models.from_pretrained({str(out)!r})"
    elif format == "safetensors":
        write_safetensors(out, state, {"format": "pt", METADATA_CONFIG_KEY: json.dumps(config)})
        load = f"clsvit_lightning.models.from_pretrained({str(out)!r})"
    elif format == "dinov2":
        state = pack_w12(state)  # a SwiGLU backbone: DINOv2's SwiGLUFFNFused packs w1, w2 as w12
        check_dinov2_layout(state, _FOREIGN["dinov2"])
        torch.save(state, out)
        load = (
            f"dinov2.models.vision_transformer.DinoVisionTransformer(img_size={config['img_size']}, "
            f"patch_size={config['patch_size']}, embed_dim={config['embed_dim']}, depth={config['depth']}, "
            f"num_heads={config['num_heads']}, num_register_tokens={config['num_registers']}, "
            f"init_values={config.get('layerscale_init')}, block_chunks=0"
            f"{', ffn_layer=' + repr('swiglufused') if config.get('ffn_layer') == 'swiglu' else ''})"
            f".load_state_dict(torch.load({str(out)!r}, weights_only=True))"
        )
    elif format == "timm":
        state = dinov2_to_timm(state)
        if out.suffix == ".safetensors":
            write_safetensors(out, state, {"format": "pt"})
        else:
            torch.save(state, out)
        load = timm_create_model_call(config, str(out))
    elif format == "dinov3":
        state = clsvit_to_dinov3(state)
        torch.save(state, out)
        load = _dinov3_load_line(state, str(out))
    else:
        state = write_hf_folder(out, state, config)
        architecture = "Dinov2WithRegistersModel" if config["num_registers"] else "Dinov2Model"
        load = f"transformers.{architecture}.from_pretrained({str(out)!r})"
    return {
        "out": str(out),
        "format": format,
        "keys": len(state),
        "params": int(sum(value.numel() for value in state.values())),
        "config": config,
        "load": load,
    }


def _dinov3_load_line(state: dict[str, torch.Tensor], out: str) -> str:
    """DINOv3's own loading call for a released size (its README's ``torch.hub.load``), else what to build."""
    name, arch = dinov3_arch_of(state)
    if name is None:
        return (
            f"DINOv3's DinoVisionTransformer({arch.describe()}).load_state_dict(torch.load({out!r}, weights_only=True))"
        )
    note = "  # its hub model also holds the training-only local_cls_norm: strict=False" if name == "vit7b16" else ""
    return f"torch.hub.load('<dinov3 checkout>', 'dinov3_{name}', source='local', weights={out!r}){note}"
