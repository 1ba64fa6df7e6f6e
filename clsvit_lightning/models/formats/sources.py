"""Find the backbone in anything the project reads: its files, its runs, DINOv2, timm, transformers.

:func:`read_weights` is what ``load_pretrained`` reads a path with (the model is given);
:func:`read_backbone` also finds the architecture, for ``from_pretrained`` and ``clsvit export``:

=====================================  =============================================================
source                                 backbone and architecture
=====================================  =============================================================
exported file (``clsvit export``)      ``{"model": state dict, "backbone_config": {...}}``
``.safetensors`` of this project       keys as ours, ``backbone_config`` (JSON) in the metadata
Lightning checkpoint, any task         the one ``*backbone.*`` prefix of ``state_dict`` (pretraining:
                                       ``teacher.`` or ``student.``); top-level ``backbone_config``
run folder                             its newest ``last*.ckpt``, else newest ``.ckpt``
Hugging Face model folder              ``config.json`` + ``model.safetensors`` (transformers' DINOv2
                                       or DINOv3)
DINOv2 / DINOv3 / timm file            inferred from the shapes (:func:`infer_backbone_config`;
(no architecture)                      DINOv3: ``dinov3_keys.infer_dinov3_arch``)
=====================================  =============================================================
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.checkpoint_files import (
    CheckpointNotFoundError,
    CheckpointReadError,
    newest_checkpoint,
    read_checkpoint,
)
from clsvit_lightning.models.dinov3 import dinov3_backbone_config
from clsvit_lightning.models.dinov3_keys import dinov3_format, hf_to_dinov3
from clsvit_lightning.models.formats.dinov3 import dinov3_arch_of, dinov3_to_clsvit
from clsvit_lightning.models.formats.hf_dinov2 import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
    backbone_config_from_hf,
    hf_to_dinov2,
    is_hf_layout,
    read_hf_folder,
)
from clsvit_lightning.models.formats.hf_dinov3 import MODEL_TYPE as HF_DINOV3_MODEL_TYPE
from clsvit_lightning.models.formats.hf_dinov3 import backbone_config_from_hf_dinov3
from clsvit_lightning.models.formats.safetensors_file import read_safetensors
from clsvit_lightning.models.swiglu import is_packed_fc1, swiglu_hidden_features

METADATA_CONFIG_KEY = "backbone_config"  # where our .safetensors files keep the architecture
_WRAPPERS = ("state_dict", "model", "teacher")
_PATCH_EMBED = "patch_embed.proj.weight"
_HEAD_WIDTH = 64  # every DINOv2 and timm ViT size (S, B, L, g) has 64-channel heads


@dataclass
class BackboneSource:
    """Backbone weights under this project's names, and the architecture when the source says it."""

    path: str
    state: dict[str, Tensor]
    config: dict[str, Any] | None
    dropped: list[str] = field(default_factory=list)  # heads, the other network of a pretraining checkpoint


def read_weights(path: str | os.PathLike) -> Mapping[str, object]:
    """The weights at ``path`` for ``load_pretrained``: a torch checkpoint as stored, or the tensors
    of a ``.safetensors`` file or Hugging Face folder (transformers' names are mapped later)."""
    path = Path(path)
    if path.is_dir() and _is_hf_folder(path):
        state, config = read_hf_folder(path)
        if config.get("model_type") == HF_DINOV3_MODEL_TYPE:  # DINOv3's names, with the folder's RoPE periods
            return _hf_dinov3_weights(state, backbone_config_from_hf_dinov3(config, str(path / CONFIG_FILE)))
        backbone_config_from_hf(config, str(path / CONFIG_FILE))  # a DINOv2 model, else a clear error
        return state
    if path.suffix == ".safetensors":
        return _read_safetensors_file(path)[0]

    return read_checkpoint(path)


def read_backbone(path: str | os.PathLike, which: str | None = None) -> BackboneSource:
    """The backbone at ``path`` (file or folder); ``which`` picks ``"teacher"`` or ``"student"`` in
    checkpoints holding both (default: the teacher; in others, the one backbone)."""

    path = Path(path)
    if path.is_dir() and _is_hf_folder(path):
        hf_state, hf_config = read_hf_folder(path)
        if hf_config.get("model_type") == HF_DINOV3_MODEL_TYPE:
            config = backbone_config_from_hf_dinov3(hf_config, str(path / CONFIG_FILE))
            state, dropped = dinov3_to_clsvit(_hf_dinov3_weights(hf_state, config))
        else:
            config = backbone_config_from_hf(hf_config, str(path / CONFIG_FILE))
            state, dropped = hf_to_dinov2(hf_state)
        return _single(BackboneSource(str(path), state, config, dropped), which)
    if path.is_dir():
        path = newest_checkpoint(path)
    if path.suffix == ".safetensors":
        tensors, metadata = _read_safetensors_file(path)
        config = None
        if METADATA_CONFIG_KEY in metadata:
            try:
                config = json.loads(metadata[METADATA_CONFIG_KEY])
            except json.JSONDecodeError:
                raise ConfigError(f"{path}: its {METADATA_CONFIG_KEY} metadata is not JSON") from None
        elif is_hf_layout(tensors) and (path.parent / CONFIG_FILE).is_file():  # model.safetensors of a folder
            config = backbone_config_from_hf(json.loads((path.parent / CONFIG_FILE).read_text()), str(path.parent))
        elif dinov3_format(tensors) == "hf" and (path.parent / CONFIG_FILE).is_file():
            hf_config = json.loads((path.parent / CONFIG_FILE).read_text())
            config = backbone_config_from_hf_dinov3(hf_config, str(path.parent))
            tensors = _hf_dinov3_weights(tensors, config)
        state, dropped = select_backbone(tensors, which, str(path))
        return BackboneSource(str(path), state, config, dropped)
    raw = read_checkpoint(path)
    state, dropped = select_backbone(raw, which, str(path))
    return BackboneSource(str(path), state, _stored_config(raw), dropped)


def select_backbone(raw: Mapping[str, object], which: str | None, source: str) -> tuple[dict[str, Tensor], list[str]]:
    """``(backbone state dict without prefix, dropped keys)`` of a checkpoint's contents.

    The backbone is the key prefix in front of ``patch_embed.proj.weight`` (``backbone.``,
    ``teacher.backbone.``, ``predictor.features.backbone.``, ...): found, not listed per task.
    """
    if which not in (None, "teacher", "student"):
        raise ConfigError(f"which must be 'teacher', 'student' or None, got {which!r}")
    state: Mapping[str, object] = raw
    while (wrapper := next((k for k in _WRAPPERS if isinstance(state.get(k), Mapping)), None)) is not None:
        state = state[wrapper]  # type: ignore[assignment]
    tensors = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ConfigError(f"{source} holds no tensors; expected a checkpoint or a state dict of a ViT backbone")
    if is_hf_layout(tensors):
        converted, dropped = hf_to_dinov2(tensors)
        return _single(BackboneSource(source, converted, None, dropped), which).state, dropped
    if dinov3_format(tensors) == "hf":  # the head count of a released width gives the RoPE periods
        converted, dropped = dinov3_to_clsvit(hf_to_dinov3(tensors))
        return _single(BackboneSource(source, converted, None, dropped), which).state, dropped
    prefixes = sorted(k[: -len(_PATCH_EMBED)] for k in tensors if k.endswith(_PATCH_EMBED))
    if not prefixes:
        raise ConfigError(
            f"{source} holds no ViT backbone (no *{_PATCH_EMBED} among its {len(tensors)} tensors); expected a "
            "backbone of this project, DINOv2, timm or transformers"
        )
    if which is not None:
        chosen = [p for p in prefixes if p.split(".")[0] == which]
        if not chosen:
            raise ConfigError(
                f"{source} has no {which} backbone (its backbone is at {_describe_prefixes(prefixes)}); "
                f"which={which!r} is for pretraining checkpoints, which hold a teacher and a student"
            )
    else:
        chosen = prefixes if len(prefixes) == 1 else [p for p in prefixes if p.split(".")[0] == "teacher"]
        if len(chosen) != 1:
            raise ConfigError(f"{source} holds several backbones ({_describe_prefixes(prefixes)}); choose one")
    prefix = chosen[0]
    backbone = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    backbone, training_only = dinov3_to_clsvit(backbone)  # DINOv3's names; ours pass as they are
    return backbone, sorted([k for k in tensors if not k.startswith(prefix)] + training_only)


def infer_backbone_config(state: Mapping[str, Tensor], source: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture of a DINOv2/DINOv3/timm state dict that does not state it, read from the shapes
    (DINOv2's giant included: its packed SwiGLU FFN).

    A DINOv3 state dict (``rope_embed.periods``) says all of it (``infer_dinov3_arch``), its untied
    ``cls_norm`` included (the ``final_norm`` specialization). For the others:

    ``num_heads`` is ``embed_dim / 64`` (every released size) and a specialization cannot be read
    off the keys: ``given`` (the caller's keyword arguments) supplies either where they differ.
    The position-embedding resize follows DINOv2: 0.1 offset, or none with antialias for register
    models (its ``reg4`` release).
    """
    if _PATCH_EMBED not in state:
        raise ConfigError(f"{source}: no {_PATCH_EMBED}; cannot tell the architecture")
    prefix_keys = {k for k in state if ".prefix_" in k or k.startswith("prefix_")}
    untied_dinov3 = "rope_embed.periods" in state and prefix_keys == _DINOV3_UNTIED_NORM  # DINOv3's cls_norm
    if "specialization" not in given and prefix_keys and not untied_dinov3:
        raise ConfigError(
            f"{source} holds specialized weights without their configuration; pass specialization= (the spec it was "
            "trained with)"
        )
    if "rope_embed.periods" in state:  # DINOv3: every size option is in the keys and shapes
        return dinov3_backbone_config(dinov3_arch_of(state)[1], in_chans=state[_PATCH_EMBED].shape[1])
    embed_dim, in_chans, patch_size, _ = state[_PATCH_EMBED].shape
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"^blocks\.(?:\d+\.)?(\d+)\.norm1\.weight$", k))}
    registers = state.get("register_tokens", state.get("reg_token"))
    num_registers = int(registers.shape[1]) if registers is not None else 0
    tokens = state["pos_embed"].shape[1] if "pos_embed" in state else 1
    side = math.isqrt(tokens) if math.isqrt(tokens) ** 2 == tokens else math.isqrt(tokens - 1)  # timm: no [CLS] slot
    if "num_heads" not in given and embed_dim % _HEAD_WIDTH:
        raise ConfigError(
            f"{source} does not state its number of attention heads, and its width {embed_dim} is not a multiple of "
            f"{_HEAD_WIDTH} (the head width of every DINOv2/timm ViT); pass num_heads="
        )
    return dict(
        img_size=side * patch_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
        depth=max(blocks) + 1 if blocks else 0, num_heads=embed_dim // _HEAD_WIDTH,
        **_ffn_arguments(state, embed_dim, source),
        qkv_bias=any(k.endswith("attn.qkv.bias") for k in state), num_registers=num_registers,
        layerscale_init=1e-5 if any(k.endswith(("ls1.gamma", "gamma_1")) for k in state) else None,
        interpolate_offset=0.0 if num_registers else 0.1, interpolate_antialias=bool(num_registers),
    )  # fmt: skip


def _ffn_arguments(state: Mapping[str, Tensor], embed_dim: int, source: str) -> dict[str, Any]:
    """``mlp_ratio`` (and ``ffn_layer``) from the FFN's shapes: a GELU MLP (``fc1`` [h, D]) or DINOv2's
    packed SwiGLU (its giant: ``w12`` [2 h', D]; timm's ``fc1`` [2 h', D] beside ``fc2`` [D, h'])."""
    first = lambda suffix: next((v for k, v in state.items() if k.endswith(suffix)), None)  # noqa: E731
    fc1, fc2, w12 = first("mlp.fc1.weight"), first("mlp.fc2.weight"), first("mlp.w12.weight")
    packed = w12 if w12 is not None else fc1 if is_packed_fc1(fc1, fc2) else None
    if packed is None:
        return {"mlp_ratio": fc1.shape[0] / embed_dim if fc1 is not None else 4.0}
    hidden = packed.shape[0] // 2
    # The MLP-equivalent ratio whose SwiGLU hidden size (2/3, up to a multiple of 8) is this one: 4 for the giant.
    ratio = next(
        (r for r in (4.0, 1.5 * hidden / embed_dim) if swiglu_hidden_features(int(embed_dim * r)) == hidden), None
    )
    if ratio is None:
        raise ConfigError(
            f"{source}: a packed SwiGLU hidden size of {hidden} for width {embed_dim} that no mlp_ratio gives"
        )
    return {"ffn_layer": "swiglu", "mlp_ratio": ratio}


_DINOV3_UNTIED_NORM = {"norm.prefix_weight", "norm.prefix_bias"}


def _hf_dinov3_weights(state: Mapping[str, Tensor], config: Mapping[str, Any]) -> dict[str, Tensor]:
    """transformers' DINOv3 weights under DINOv3's names, with the RoPE periods of their ``config.json``."""
    return hf_to_dinov3(state, num_heads=config["num_heads"], rope_base=config["rope_base"])


def _is_hf_folder(folder: Path) -> bool:
    """A folder with transformers' weights, or with a ``config.json`` and no ``.ckpt`` (a run folder)."""
    if (folder / WEIGHTS_FILE).is_file() or (folder / WEIGHTS_INDEX_FILE).is_file():
        return True
    return (folder / CONFIG_FILE).is_file() and next(folder.rglob("*.ckpt"), None) is None


def _read_safetensors_file(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:

    if not path.exists():
        raise CheckpointNotFoundError(f"{path} does not exist")
    if not path.is_file():
        raise CheckpointReadError(f"{path} is not a file; expected a .safetensors file")
    if path.stat().st_size == 0:
        raise CheckpointReadError(f"{path} is an empty file; expected a .safetensors file")
    return read_safetensors(path)


def _stored_config(raw: Mapping[str, object]) -> dict[str, Any] | None:
    """The backbone's ``VisionTransformer`` arguments saved beside the weights, if any."""
    config = raw.get("backbone_config")
    if isinstance(config, Mapping) and config:
        return dict(config)
    hyper_parameters = raw.get("hyper_parameters")
    backbone = hyper_parameters.get("backbone") if isinstance(hyper_parameters, Mapping) else None
    init_args = backbone.get("init_args", backbone) if isinstance(backbone, Mapping) else None
    if isinstance(init_args, Mapping) and "embed_dim" in init_args:
        return dict(init_args)
    return None


def _single(source: BackboneSource, which: str | None) -> BackboneSource:
    if which is not None:
        raise ConfigError(
            f"{source.path} holds one backbone (transformers' DINOv2); which={which!r} is for pretraining "
            "checkpoints, which hold a teacher and a student"
        )
    return source


def _describe_prefixes(prefixes: list[str]) -> str:
    return ", ".join(f"{p or '(no prefix)'}*" for p in prefixes)
