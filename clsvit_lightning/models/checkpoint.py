"""Load DINOv2- and timm-format ViT weights into a (possibly specialized) VisionTransformer.

Our key names are DINOv2's, so most of the work is unwrapping and renaming:

* transformers' DINOv2 (a model folder, its ``model.safetensors``, or its names):
  ``formats/hf_dinov2.py`` maps the names, joins ``query``/``key``/``value`` into ``qkv``;
* wrappers: ``{"teacher": ...}``, ``{"model": ...}``, ``{"state_dict": ...}``; key prefixes
  ``module.`` and ``backbone.`` (heads such as ``dino_head.*`` beside ``backbone.*`` are dropped);
  Lightning checkpoints of this project's pretraining (``teacher.backbone.*``: the teacher);
* DINOv2 training chunks: ``blocks.<chunk>.<i>.`` -> ``blocks.<i>.`` (``i`` is already global);
* DeiT III: ``blocks.<i>.gamma_1``/``gamma_2`` -> ``blocks.<i>.ls1.gamma``/``ls2.gamma``;
* timm: ``reg_token`` -> ``register_tokens``, a ``pos_embed`` without a [CLS] position
  (``no_embed_class``) gets a zero one, the classifier ``head.*`` is dropped;
* a ``pos_embed`` of another grid size is resized to the model's grid as the model's own run-time
  interpolation would (bicubic, its offset and antialias);
* ``prefix_*`` parameters that the checkpoint lacks are warm-started from the shared weights, so
  a specialized model loaded from a vanilla checkpoint computes exactly the vanilla function.

Anything else that does not match raises :class:`CheckpointMismatchError` listing the keys.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.formats.hf_dinov2 import hf_to_dinov2, is_hf_layout
from clsvit_lightning.models.formats.sources import read_weights
from clsvit_lightning.models.vision_transformer import VisionTransformer

_WRAPPERS = ("teacher", "model", "state_dict")
_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")
_DEIT3_LAYERSCALE = re.compile(r"^blocks\.(\d+)\.gamma_([12])$")  # DeiT III (models_v2.py): gamma_1, gamma_2
_DROPPED_TIMM_KEYS = ("head.weight", "head.bias")
# Model parameters a foreign checkpoint may lack; they keep their initial value.
_OPTIONAL_KEYS = ("mask_token",)


class CheckpointMismatchError(ConfigError):
    """The checkpoint does not fit the model; the message lists the offending keys."""


class CheckpointReadError(CheckpointMismatchError):
    """The file is empty, truncated, not a torch checkpoint, or not the kind of checkpoint expected."""


class CheckpointNotFoundError(FileNotFoundError, ConfigError):
    """The checkpoint path does not exist (a ``FileNotFoundError`` to its callers)."""


@dataclass
class LoadReport:
    source: str
    warm_started: list[str] = field(default_factory=list)  # prefix_* keys copied from shared ones
    kept_initial: list[str] = field(default_factory=list)  # optional keys absent from the checkpoint
    dropped: list[str] = field(default_factory=list)  # non-backbone keys ignored (heads)
    resized: list[str] = field(default_factory=list)  # interpolated to the model's grid


def load_pretrained(
    model: VisionTransformer,
    path_or_state_dict: str | os.PathLike | Mapping[str, Tensor],
    source: str | None = None,
) -> LoadReport:
    """Load DINOv2/timm/transformers/own weights into ``model`` in place and report what was adapted.

    A path may also be a ``.safetensors`` file or a Hugging Face DINOv2 folder (``config.json`` +
    ``model.safetensors``); ``source`` names a given state dict in error messages.
    """
    if isinstance(path_or_state_dict, Mapping):
        source, raw = source or "<state dict>", path_or_state_dict
    else:
        source, raw = source or str(path_or_state_dict), read_weights(path_or_state_dict)
    report = LoadReport(source=source)
    state = _unwrap(raw, report)
    if is_hf_layout(state):  # transformers' DINOv2 names
        state, dropped = hf_to_dinov2(state)
        report.dropped += dropped
    state = _to_dinov2_names(state, model, report)
    expected = model.state_dict()
    _check_keys(state, expected, model, report)
    model.load_state_dict(state, strict=True)
    return report


def read_checkpoint(path: str | os.PathLike) -> Mapping[str, object]:
    """``torch.load`` with ``weights_only=True``; every checkpoint reader of the project goes through it.

    Errors name the file and what was expected: ``X does not exist``, ``X is an empty file``, ``X is
    truncated or not a torch checkpoint (UnpicklingError)``. torch's own text is not shown: for a
    garbage file it advises ``weights_only=False``, which would run arbitrary code from the file.

    A folder (a training run's root) stands for its newest ``last*.ckpt``, else its newest ``.ckpt``,
    searched recursively: the W&B logger files checkpoints under ``<save_dir>/<project>/<run id>/``.
    """
    path = Path(path)
    if path.is_dir():
        path = newest_checkpoint(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"{path} does not exist")
    if not path.is_file():
        raise CheckpointReadError(f"{path} is not a file; expected a torch checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointReadError(f"{path} is an empty file; expected a torch checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (torch raises several types for corrupt or unsafe files)
        unsafe = re.search(r"GLOBAL (\S+)", str(error))
        if unsafe:  # a real pickle, but of objects other than tensors and containers
            why = f"holds a pickled {unsafe.group(1)}, which a weights-only load refuses to run"
        else:
            why = f"is truncated or not a torch checkpoint ({type(error).__name__})"
        raise CheckpointReadError(f"{path} {why}") from None
    if not isinstance(checkpoint, Mapping):
        raise CheckpointReadError(f"{path} holds a {type(checkpoint).__name__}; expected a checkpoint dict")
    return checkpoint


def newest_checkpoint(folder: Path) -> Path:
    """The newest ``last*.ckpt`` under ``folder`` (by modification time), else its newest ``.ckpt``."""
    for pattern in ("last*.ckpt", "*.ckpt"):
        found = sorted(folder.rglob(pattern), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    raise CheckpointNotFoundError(f"no .ckpt file under the folder {folder}")


def _unwrap(raw: Mapping[str, object], report: LoadReport) -> dict[str, Tensor]:
    state: Mapping[str, object] = raw
    while True:
        wrapper = next((k for k in _WRAPPERS if isinstance(state.get(k), Mapping)), None)
        if wrapper is None:
            break
        state = state[wrapper]  # type: ignore[assignment]
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointMismatchError(
            f"{report.source}: no tensors found; expected a state dict, optionally wrapped in one of {list(_WRAPPERS)}"
        )
    tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    if any(k.startswith("teacher.backbone.") for k in tensors):  # a pretraining checkpoint of this project
        report.dropped += sorted(k for k in tensors if not k.startswith("teacher.backbone."))
        tensors = {k.removeprefix("teacher."): v for k, v in tensors.items() if k.startswith("teacher.backbone.")}
    if any(k.startswith("backbone.") for k in tensors):
        report.dropped += sorted(k for k in tensors if not k.startswith("backbone."))
        tensors = {k.removeprefix("backbone."): v for k, v in tensors.items() if k.startswith("backbone.")}
    return tensors


def _to_dinov2_names(state: dict[str, Tensor], model: VisionTransformer, report: LoadReport) -> dict[str, Tensor]:
    renamed: dict[str, Tensor] = {}
    for key, value in state.items():
        key = _CHUNKED_BLOCK.sub(r"blocks.\1.", key)
        key = _DEIT3_LAYERSCALE.sub(r"blocks.\1.ls\2.gamma", key)
        if key == "reg_token":  # timm
            key = "register_tokens"
        if key in _DROPPED_TIMM_KEYS:
            report.dropped.append(key)
            continue
        renamed[key] = value
    if "pos_embed" in renamed:
        renamed["pos_embed"] = _fit_pos_embed(renamed["pos_embed"], model, report)
    return renamed


def _fit_pos_embed(pos_embed: Tensor, model: VisionTransformer, report: LoadReport) -> Tensor:
    """Match ``[1, 1 + M*M, D]`` to the model's grid; add a [CLS] slot if the source lacks one.

    The grid is resized as the model resizes its own at run time (``interpolate_pos_encoding``:
    DINOv2's offset and antialias settings), so the loaded model gives the features the source
    model gives at this resolution.
    """
    target = model.pos_embed
    if pos_embed.ndim != 3 or pos_embed.shape[-1] != target.shape[-1]:
        return pos_embed  # reported as a shape mismatch by _check_keys
    tokens = pos_embed.shape[1]
    if math.isqrt(tokens) ** 2 == tokens:  # timm no_embed_class: patches only, [CLS] adds nothing
        pos_embed = torch.cat([pos_embed.new_zeros(1, 1, pos_embed.shape[-1]), pos_embed], dim=1)
    source_side, target_side = math.isqrt(pos_embed.shape[1] - 1), math.isqrt(target.shape[1] - 1)
    if source_side**2 != pos_embed.shape[1] - 1:
        return pos_embed  # not a square grid: reported as a shape mismatch
    if source_side == target_side:
        return pos_embed
    grid = pos_embed[:, 1:].float().reshape(1, source_side, source_side, -1).permute(0, 3, 1, 2)
    offset, antialias = model.interpolate_offset, model.interpolate_antialias
    if offset:
        scale = (target_side + offset) / source_side
        grid = F.interpolate(grid, scale_factor=(scale, scale), mode="bicubic", antialias=antialias)
    else:
        grid = F.interpolate(grid, size=(target_side, target_side), mode="bicubic", antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, target_side * target_side, -1).to(pos_embed.dtype)
    report.resized.append(f"pos_embed: {source_side}x{source_side} -> {target_side}x{target_side} grid")
    return torch.cat([pos_embed[:, :1], grid], dim=1)


def _check_keys(
    state: dict[str, Tensor], expected: Mapping[str, Tensor], model: VisionTransformer, report: LoadReport
) -> None:
    unknown = sorted(set(state) - set(expected))
    missing = []
    for key in sorted(set(expected) - set(state)):
        module_path, _, name = key.rpartition(".")
        shared = f"{module_path}.{name.removeprefix('prefix_')}" if module_path else name.removeprefix("prefix_")
        if name.startswith("prefix_") and shared in state:
            report.warm_started.append(key)
        elif key in _OPTIONAL_KEYS:
            report.kept_initial.append(key)
            state[key] = expected[key].clone()
        else:
            missing.append(key)
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected), key=lambda k: (k.startswith("blocks."), k))
        if state[k].shape != expected[k].shape
    ]
    if not (unknown or missing or wrong_shape):
        return
    lines = [
        f"checkpoint {report.source} does not match the model:",
        f"  model:      {_describe(model)}",
        f"  checkpoint: {_describe_state(state)}",
    ]
    if wrong_shape:
        lines.append(f"  shape mismatches ({len(wrong_shape)}): " + "; ".join(wrong_shape[:10]))
    if missing:
        lines.append(f"  missing from the checkpoint ({len(missing)}): " + ", ".join(missing[:20]))
    if unknown:
        lines.append(f"  unknown to the model ({len(unknown)}): " + ", ".join(unknown[:20]))
    if any(".prefix_" in k for k in unknown):
        lines.append("  hint: the checkpoint is specialized; build the model with its specialization")
    if any(re.match(r"blocks\.\d+\.mlp\.w(12|3)\.", k) for k in unknown):
        lines.append("  hint: the checkpoint uses a SwiGLU FFN (DINOv2 giant2), which this backbone does not build")
    raise CheckpointMismatchError("\n".join(lines))


def _describe(model: VisionTransformer) -> str:
    c = model.config
    return (
        f"embed_dim={c['embed_dim']}, depth={c['depth']}, patch_size={c['patch_size']}, "
        f"num_registers={c['num_registers']}, specialization={c['specialization']!r}"
    )


def _describe_state(state: Mapping[str, Tensor]) -> str:
    """What architecture a state dict seems to hold, to make mismatch errors readable."""
    parts = []
    if "cls_token" in state:
        parts.append(f"embed_dim={state['cls_token'].shape[-1]}")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    parts.append(f"depth={max(blocks) + 1 if blocks else 0}")
    if "patch_embed.proj.weight" in state:
        parts.append(f"patch_size={state['patch_embed.proj.weight'].shape[-1]}")
    registers = state.get("register_tokens")
    parts.append(f"num_registers={registers.shape[1] if registers is not None else 0}")
    parts.append(f"specialized={any('.prefix_' in k or k.startswith('prefix_') for k in state)}")
    return ", ".join(parts)
