"""Load DINOv2-, DINOv3- and timm-format ViT weights into a (possibly specialized) VisionTransformer.

Our key names are DINOv2's, so most of the work is unwrapping and renaming:

* transformers' DINOv2 (a model folder, its ``model.safetensors``, or its names):
  ``formats/hf_dinov2.py`` maps the names, joins ``query``/``key``/``value`` into ``qkv``;
* DINOv3 (``formats/dinov3.py``): ``storage_tokens`` -> ``register_tokens``, the untied
  ``cls_norm`` -> the specialized final norm's prefix path ``norm.prefix_*`` (the model needs the
  ``final_norm`` specialization), the training-only ``local_cls_norm`` dropped; its RoPE periods
  must be the model's; transformers' ``DINOv3ViTModel`` names go through ``hf_to_dinov3`` first;
  a DINOv2 checkpoint in a DINOv3 model or the reverse is an error that says which is which;
* wrappers: ``{"teacher": ...}``, ``{"model": ...}``, ``{"state_dict": ...}``; key prefixes
  ``module.`` and ``backbone.`` (heads such as ``dino_head.*`` beside ``backbone.*`` are dropped);
  Lightning checkpoints of this project's pretraining (``teacher.backbone.*``: the teacher);
* DINOv2 training chunks: ``blocks.<chunk>.<i>.`` -> ``blocks.<i>.`` (``i`` is already global);
* DINOv2's giant (a SwiGLU model: ``ffn_layer="swiglu"``): its packed ``mlp.w12`` (timm:
  ``mlp.fc1``/``fc2``) -> ``mlp.w1`` (first half, the gate), ``mlp.w2``, ``mlp.w3``;
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

import torch
import torch.nn.functional as F
from torch import Tensor

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.checkpoint_files import CheckpointMismatchError
from clsvit_lightning.models.dinov3_keys import dinov3_format, hf_to_dinov3
from clsvit_lightning.models.formats.dinov3 import dinov3_arch_of, dinov3_to_clsvit
from clsvit_lightning.models.formats.hf_dinov2 import hf_to_dinov2, is_hf_layout
from clsvit_lightning.models.formats.sources import read_weights
from clsvit_lightning.models.swiglu import is_packed_fc1, unpack_w12
from clsvit_lightning.models.vision_transformer import VisionTransformer

_WRAPPERS = ("teacher", "model", "state_dict")
_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")
_DEIT3_LAYERSCALE = re.compile(r"^blocks\.(\d+)\.gamma_([12])$")  # DeiT III (models_v2.py): gamma_1, gamma_2
_TIMM_SWIGLU = re.compile(r"^(blocks\.\d+\.)mlp\.fc([12])\.")  # timm's SwiGLUPacked (DINOv2 giant)
_DROPPED_TIMM_KEYS = ("head.weight", "head.bias")
# Model parameters a foreign checkpoint may lack; they keep their initial value.
_OPTIONAL_KEYS = ("mask_token",)


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
    elif dinov3_format(state) == "hf":  # transformers' DINOv3 names
        state = _from_hf_dinov3(state, model)
    _check_position_encoding(state, model, report)
    state = _from_dinov3_names(state, model, report)
    state = _to_dinov2_names(state, model, report)
    expected = model.state_dict()
    _check_keys(state, expected, model, report)
    _check_rope_periods(state, model, report)
    model.load_state_dict(state, strict=True)
    return report


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


def _from_hf_dinov3(state: dict[str, Tensor], model: VisionTransformer) -> dict[str, Tensor]:
    """transformers' DINOv3 names -> DINOv3's. Its state dict holds no RoPE periods: the model's are used."""
    rope = model.rope_embed
    model_heads = model.blocks[0].attn.num_heads if len(model.blocks) else 1
    try:  # a model without RoPE is about to be refused: its error names the released size, if any
        converted = hf_to_dinov3(state, num_heads=model_heads if rope is not None else None)
    except ConfigError:  # not a released width
        converted = hf_to_dinov3(state, num_heads=model_heads)
    if rope is not None:
        converted["rope_embed.periods"] = rope.periods.detach().clone()
    return converted


def _check_position_encoding(state: Mapping[str, Tensor], model: VisionTransformer, report: LoadReport) -> None:
    """A DINOv2 checkpoint (learned ``pos_embed``) in a DINOv3 model (RoPE), or the reverse: say which is which."""
    is_dinov3 = (
        "rope_embed.periods" in state or "storage_tokens" in state or any(k.endswith(".bias_mask") for k in state)
    )
    if model.rope_embed is not None and "pos_embed" in state:
        raise CheckpointMismatchError(
            f"checkpoint {report.source} does not match the model: this is a DINOv2 checkpoint (a learned pos_embed "
            f"{tuple(state['pos_embed'].shape)}) and the model is a DINOv3 backbone (RoPE); build it with "
            "position_encoding='learned' (vit_small(...), ...), or let from_pretrained build it"
        )
    if model.rope_embed is None and is_dinov3 and "pos_embed" not in state:
        try:
            name, arch = dinov3_arch_of(state)
            described = f"{name}: {arch.describe()}" if name else arch.describe()
        except (ConfigError, KeyError, IndexError):  # a partial layout (no rope_embed.periods, no blocks)
            name, described = None, "a DINOv3 layout"
        builder = f"dinov3_{name}()" if name else "VisionTransformer(position_encoding='rope', ...)"
        raise CheckpointMismatchError(
            f"checkpoint {report.source} does not match the model: this is a DINOv3 checkpoint "
            f"({described}; RoPE, no pos_embed) and the model learns its position embedding (DINOv2); "
            f"build it with {builder} from clsvit_lightning.models, or let from_pretrained build it"
        )


def _from_dinov3_names(state: dict[str, Tensor], model: VisionTransformer, report: LoadReport) -> dict[str, Tensor]:
    """DINOv3's token and final-norm names -> ours (``formats/dinov3.py``); checks the untied norm fits."""
    if "cls_norm.weight" in state:
        if not model.norm.specialized:
            raise CheckpointMismatchError(
                f"checkpoint {report.source} has DINOv3's untied final norm cls_norm (untie_cls_and_patch_norms: [CLS] "
                "and the storage tokens have their own final LayerNorm) and the model's final norm is shared; build it "
                "with a specialization that splits the final norm (e.g. 'final_norm' or 'paper'), whose prefix path "
                "takes cls_norm"
            )
        if model.num_prefix_path_tokens < model.num_prefix_tokens:
            raise CheckpointMismatchError(
                f"checkpoint {report.source} has DINOv3's cls_norm, which normalises [CLS] and the storage tokens, and "
                "the model sends its registers along the patch path (registers_path:patch); build it with "
                "registers_path:cls"
            )
    state, dropped = dinov3_to_clsvit(state)
    report.dropped += dropped
    return state


def _check_rope_periods(state: Mapping[str, Tensor], model: VisionTransformer, report: LoadReport) -> None:
    """The checkpoint's RoPE periods are loaded as they are; they must be those the model was built with."""
    if model.rope_embed is None or "rope_embed.periods" not in state:
        return
    ours, theirs = (
        model.rope_embed.periods.detach().double(),
        state["rope_embed.periods"].double().to(model.rope_embed.periods.device),
    )
    if not torch.allclose(ours, theirs, rtol=1e-5, atol=0.0):  # an ulp apart when computed on another device
        rope = model.rope_embed
        built = (
            f"rope_base={rope.base}" if rope.base is not None else f"rope periods {rope.min_period}..{rope.max_period}"
        )
        raise CheckpointMismatchError(
            f"checkpoint {report.source}: its RoPE periods (rope_embed.periods {_few(theirs)}) differ from the model's "
            f"({built}: {_few(ours)}); build the model with the checkpoint's RoPE (DINOv3's released backbones: "
            "rope_base=100)"
        )


def _few(values: Tensor) -> str:
    shown = ", ".join(f"{v:.4g}" for v in values[:4].tolist())
    return f"[{shown}{', ...' if len(values) > 4 else ''}]"


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
    if "pos_embed" in renamed and model.pos_embed is not None:
        renamed["pos_embed"] = _fit_pos_embed(renamed["pos_embed"], model, report)
    renamed = _unpack_swiglu(renamed, model)
    return renamed


def _unpack_swiglu(state: dict[str, Tensor], model: VisionTransformer) -> dict[str, Tensor]:
    """A SwiGLU model reads the packed layouts of DINOv2's giant: DINOv2's ``mlp.w12``/``mlp.w3``
    (and transformers', renamed to them before) and timm's ``mlp.fc1``/``mlp.fc2`` (its
    ``SwiGLUPacked``: the same matrices under MLP names, gate first)."""
    if not str(model.config.get("ffn_layer", "mlp")).startswith("swiglu"):
        return state
    names = {"1": "w12", "2": "w3"}

    def timm_packed(block: str) -> bool:
        return is_packed_fc1(state.get(f"{block}mlp.fc1.weight"), state.get(f"{block}mlp.fc2.weight"))

    state = {
        _TIMM_SWIGLU.sub(lambda m: f"{m[1]}mlp.{names[m[2]]}.", key)
        if timm_packed(key.split("mlp.")[0])
        else key: value
        for key, value in state.items()
    }
    return unpack_w12(state)


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
    lines += _hints(unknown, missing)
    raise CheckpointMismatchError("\n".join(lines))


def _hints(unknown: list[str], missing: list[str]) -> list[str]:
    """What a set of unknown and missing keys says about the architecture that differs."""
    hints = []
    if any(re.match(r"blocks\.\d+\.mlp\.w12\.", k) for k in unknown):
        hints.append(
            "the checkpoint uses DINOv2's packed SwiGLU FFN (mlp.w12, its giant); build the model with "
            "ffn_layer='swiglu' and mlp_ratio=4 (hubconf's dinov2_vitg14, or "
            "vit_giant(patch_size=14, ffn_layer='swiglu'))"
        )
    elif any(re.match(r"blocks\.\d+\.mlp\.w[123]\.", k) for k in unknown):
        hints.append(
            "the checkpoint uses a SwiGLU FFN (mlp.w1/w2/w3, as DINOv3's vits16plus, vitl16plus, vith16plus and "
            "vit7b16); build the model with its ffn_layer ('swiglu'; 'swiglu64' for vit7b16) and mlp_ratio"
        )
    if any(re.match(r"blocks\.\d+\.mlp\.fc[12]\.", k) for k in unknown):
        hints.append("the checkpoint uses a GELU MLP (mlp.fc1/fc2); build the model with ffn_layer='mlp'")
    if "rope_embed.periods" in missing:
        hints.append(
            "the checkpoint lacks rope_embed.periods, the RoPE periods buffer every DINOv3 checkpoint holds (a "
            "transformers DINOv3ViTModel state dict is converted with the model's periods)"
        )
    if any(k.endswith(".attn.qkv.bias_mask") for k in unknown):
        hints.append(
            "the checkpoint masks the key bias (attn.qkv.bias_mask, DINOv3); build the model with mask_k_bias=True"
        )
    if any(k.endswith(".attn.qkv.bias_mask") for k in missing):
        hints.append(
            "the model masks the key bias (mask_k_bias=True) and the checkpoint does not; build it with "
            "mask_k_bias=False"
        )
    return [f"  hint: {hint}" for hint in hints]


def _describe(model: VisionTransformer) -> str:
    c = model.config
    return (
        f"embed_dim={c['embed_dim']}, depth={c['depth']}, patch_size={c['patch_size']}, "
        f"num_registers={c['num_registers']}, {'RoPE' if model.rope_embed is not None else 'pos_embed'}, "
        f"ffn_layer={c.get('ffn_layer', 'mlp')!r}, specialization={c['specialization']!r}"
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
    parts.append("RoPE" if "rope_embed.periods" in state else "pos_embed" if "pos_embed" in state else "no position")
    swiglu = any(re.match(r"blocks\.\d+\.mlp\.w", k) for k in state)
    parts.append(f"ffn={'SwiGLU' if swiglu else 'MLP'}")
    parts.append(f"specialized={any('.prefix_' in k or k.startswith('prefix_') for k in state)}")
    return ", ".join(parts)
