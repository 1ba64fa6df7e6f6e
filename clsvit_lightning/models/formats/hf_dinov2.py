"""transformers' DINOv2 (``Dinov2Model``, ``Dinov2WithRegistersModel``) <-> this backbone's layout.

A Hugging Face model folder holds ``config.json`` (the architecture) and ``model.safetensors``
(sharded: ``model.safetensors.index.json`` naming the shards). The weights are DINOv2's under
other names; the structural differences are attention, whose ``qkv`` matrix is three, and the
giant's SwiGLU (``use_swiglu_ffn``), whose two input matrices are packed in one, as in DINOv2::

    embeddings.cls_token / mask_token / register_tokens      cls_token / mask_token / register_tokens
    embeddings.position_embeddings [1, 1 + N, D]              pos_embed
    embeddings.patch_embeddings.projection.*                  patch_embed.proj.*
    encoder.layer.{i}.norm1.* / norm2.* / mlp.fc1.* / mlp.fc2.*   blocks.{i}.(same)
    encoder.layer.{i}.attention.attention.{query,key,value}.*     blocks.{i}.attn.qkv.* (rows q | k | v)
    encoder.layer.{i}.attention.output.dense.*                blocks.{i}.attn.proj.*
    encoder.layer.{i}.layer_scale{1,2}.lambda1                blocks.{i}.ls{1,2}.gamma
    encoder.layer.{i}.mlp.weights_in.* / weights_out.*        blocks.{i}.mlp.w1.* + w2.* (rows) / w3.*
    layernorm.*                                               norm.*

transformers 5 renames attention in memory (``attention.{q,k,v,o}_proj``) but writes the names
above (``save_pretrained(save_original_format=True)``, its default); both are read. Its model
always has LayerScale, so a backbone without one is written with ``lambda1 = 1``. Position
embeddings are resized without DINOv2's 0.1 offset, without antialias in ``Dinov2Model`` and
with it in ``Dinov2WithRegistersModel``: a backbone read from a folder is built the same way,
so it matches the transformers model at every resolution.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.formats.safetensors_file import read_safetensors, write_safetensors
from clsvit_lightning.models.swiglu import pack_w12

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
MODEL_TYPES = {"dinov2": "Dinov2Model", "dinov2_with_registers": "Dinov2WithRegistersModel"}
# transformers' config defaults, which a config.json may leave out (they differ in patch_size).
_HF_DEFAULTS = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "mlp_ratio": 4,
    "hidden_act": "gelu", "layer_norm_eps": 1e-6, "image_size": 224, "num_channels": 3, "qkv_bias": True,
    "layerscale_value": 1.0, "use_swiglu_ffn": False,
}  # fmt: skip
_HF_PATCH_SIZE = {"dinov2": 14, "dinov2_with_registers": 16}
_HF_REGISTERS = {"dinov2": 0, "dinov2_with_registers": 4}

_TOP_LEVEL = {
    "embeddings.cls_token": "cls_token",
    "embeddings.mask_token": "mask_token",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
# Per layer: transformers name (original, then transformers-5 in-memory) -> ours.
_PER_LAYER = {
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.weights_in": "mlp.w12",  # SwiGLU (DINOv2 giant): DINOv2's packed names, unpacked by load_pretrained
    "mlp.weights_out": "mlp.w3",
    "mlp.down_proj": "mlp.w3",
}
_QKV_PARTS = {
    "attention.attention.query": 0, "attention.attention.key": 1, "attention.attention.value": 2,
    "attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2,
}  # fmt: skip
_LAYER_KEY = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)$")
_BASE_PREFIXES = ("dinov2_with_registers.", "dinov2.")  # the backbone inside *ForImageClassification
_ORIGINAL_QKV = ("query", "key", "value")


def is_hf_layout(state: Mapping[str, object]) -> bool:
    """Whether ``state`` has transformers' DINOv2 names (optionally under ``dinov2.``)."""
    key = "embeddings.patch_embeddings.projection.weight"
    return any(k == key or (k.endswith(key) and k[: -len(key)] in _BASE_PREFIXES) for k in state)


def hf_to_dinov2(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """transformers' names -> ours: ``(state, dropped keys)`` (the classifier of ``*ForImageClassification``)."""
    out: dict[str, Tensor] = {}
    dropped: list[str] = []
    qkv: dict[tuple[int, str], dict[int, Tensor]] = {}  # (layer, weight|bias) -> {part: tensor}
    swiglu_in: dict[tuple[int, str], dict[int, Tensor]] = {}  # transformers-5 gate/up halves of w12
    for key, value in state.items():
        for prefix in _BASE_PREFIXES:
            key = key.removeprefix(prefix)
        if key in _TOP_LEVEL:
            out[_TOP_LEVEL[key]] = value
            continue
        match = _LAYER_KEY.match(key)
        if not match:
            dropped.append(key)  # classifier.*, pooler, anything outside the backbone
            continue
        layer, module, param = int(match.group(1)), match.group(2), match.group(3)
        if module in _QKV_PARTS:
            qkv.setdefault((layer, param), {})[_QKV_PARTS[module]] = value
        elif module in ("mlp.gate_proj", "mlp.up_proj"):
            swiglu_in.setdefault((layer, param), {})[module == "mlp.up_proj"] = value
        elif f"{module}.{param}" in _PER_LAYER:
            out[f"blocks.{layer}.{_PER_LAYER[f'{module}.{param}']}"] = value
        else:
            out[f"blocks.{layer}.{_PER_LAYER.get(module, module)}.{param}"] = value
    for groups, name, count in ((qkv, "attn.qkv", 3), (swiglu_in, "mlp.w12", 2)):
        for (layer, param), parts in groups.items():
            if len(parts) != count:
                raise ConfigError(f"transformers DINOv2 weights: layer {layer} lacks part of its {name} {param}")
            out[f"blocks.{layer}.{name}.{param}"] = torch.cat([parts[i] for i in range(count)], dim=0)
    return out, dropped


def dinov2_to_hf(state: Mapping[str, Tensor], depth: int) -> dict[str, Tensor]:
    """Our vanilla names -> transformers' original names; a missing LayerScale becomes ``lambda1 = 1``.

    Raises :class:`ConfigError` listing any key transformers' DINOv2 has no place for.
    """
    out: dict[str, Tensor] = {}
    ours_to_hf = {ours: hf for hf, ours in _TOP_LEVEL.items()}
    unplaced = []
    for key, value in pack_w12(state).items():  # a SwiGLU backbone: transformers packs w1, w2 as weights_in
        if key in ours_to_hf:
            out[ours_to_hf[key]] = value
            continue
        match = re.match(r"^blocks\.(\d+)\.(.+)$", key)
        name = match.group(2) if match else ""
        layer = f"encoder.layer.{match.group(1)}." if match else ""
        if name in ("attn.qkv.weight", "attn.qkv.bias"):
            param = name.rsplit(".", 1)[1]
            for part, tensor in zip(_ORIGINAL_QKV, value.chunk(3, dim=0), strict=True):
                out[f"{layer}attention.attention.{part}.{param}"] = tensor.contiguous()
        elif name in ("attn.proj.weight", "attn.proj.bias"):
            out[f"{layer}attention.output.dense.{name.rsplit('.', 1)[1]}"] = value
        elif name in ("ls1.gamma", "ls2.gamma"):
            out[f"{layer}layer_scale{name[2]}.lambda1"] = value
        elif match_swiglu := re.fullmatch(r"mlp\.w(12|3)\.(weight|bias)", name):
            out[f"{layer}mlp.weights_{'in' if match_swiglu[1] == '12' else 'out'}.{match_swiglu[2]}"] = value
        elif name in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias") or re.fullmatch(
            r"mlp\.fc[12]\.(weight|bias)", name
        ):
            out[f"{layer}{name}"] = value
        else:
            unplaced.append(key)
    if unplaced:
        raise ConfigError(f"transformers' DINOv2 has no parameter for {', '.join(sorted(unplaced)[:10])}")
    dim = state["cls_token"].shape[-1]
    for index in range(depth):  # no LayerScale in the backbone: transformers' always multiplies
        for scale in (1, 2):
            out.setdefault(f"encoder.layer.{index}.layer_scale{scale}.lambda1", torch.ones(dim))
    return out


def backbone_config_from_hf(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The ``VisionTransformer`` arguments equivalent to a transformers DINOv2 ``config.json``."""
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ConfigError(
            f"{source} describes a model_type={model_type!r} model; expected 'dinov2' or 'dinov2_with_registers' "
            "(transformers' Dinov2Model, Dinov2WithRegistersModel)"
        )
    get = lambda name: config.get(name, _HF_DEFAULTS.get(name))
    swiglu = bool(get("use_swiglu_ffn"))  # DINOv2's giant: SwiGLU (silu), hidden_act unused
    if (not swiglu and get("hidden_act") != "gelu") or get("layer_norm_eps") != 1e-6:
        raise ConfigError(
            f"{source}: hidden_act={get('hidden_act')!r}, layer_norm_eps={get('layer_norm_eps')}; "
            "this backbone computes DINOv2's exact GELU and LayerNorm eps 1e-06"
        )
    image_size = _square(config.get("image_size", _HF_DEFAULTS["image_size"]), "image_size", source)
    patch_size = _square(config.get("patch_size", _HF_PATCH_SIZE[model_type]), "patch_size", source)
    with_registers = model_type == "dinov2_with_registers"
    return dict(
        img_size=image_size - image_size % patch_size, patch_size=patch_size, in_chans=int(get("num_channels")),
        embed_dim=int(get("hidden_size")), depth=int(get("num_hidden_layers")),
        num_heads=int(get("num_attention_heads")), mlp_ratio=float(get("mlp_ratio")), qkv_bias=bool(get("qkv_bias")),
        num_registers=int(config.get("num_register_tokens", _HF_REGISTERS[model_type])) if with_registers else 0,
        specialization="vanilla", layerscale_init=float(get("layerscale_value")) or 1.0,
        interpolate_offset=0.0, interpolate_antialias=with_registers, ffn_layer="swiglu" if swiglu else "mlp",
    )  # fmt: skip


def hf_config_from_backbone(config: Mapping[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """``config.json`` of the transformers model equivalent to a vanilla backbone configuration."""
    model_type = "dinov2_with_registers" if config["num_registers"] else "dinov2"
    mlp_ratio = float(config["mlp_ratio"])
    hf = {
        "architectures": [MODEL_TYPES[model_type]],
        "model_type": model_type,
        "hidden_size": config["embed_dim"],
        "num_hidden_layers": config["depth"],
        "num_attention_heads": config["num_heads"],
        "mlp_ratio": int(mlp_ratio) if mlp_ratio.is_integer() else mlp_ratio,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
        "image_size": config["img_size"],
        "patch_size": config["patch_size"],
        "num_channels": config.get("in_chans", 3),
        "qkv_bias": config.get("qkv_bias", True),
        "layerscale_value": config.get("layerscale_init") or 1.0,
        "use_swiglu_ffn": config.get("ffn_layer", "mlp") == "swiglu",
        "drop_path_rate": 0.0,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "dtype": str(dtype).removeprefix("torch."),
    }
    if config["num_registers"]:
        hf["num_register_tokens"] = config["num_registers"]
    return hf


def read_hf_folder(folder: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(weights under transformers' names, config.json)`` of a Hugging Face model folder."""
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ConfigError(
            f"{folder} has no {CONFIG_FILE}; expected a Hugging Face model folder ({CONFIG_FILE} + {WEIGHTS_FILE}: "
            "the config gives the architecture)"
        )
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{config_path} is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{config_path} holds a {type(config).__name__}; expected a JSON object")
    index_path = folder / WEIGHTS_INDEX_FILE
    if (folder / WEIGHTS_FILE).is_file():
        files = [folder / WEIGHTS_FILE]
    elif index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"{index_path} is not a safetensors index (a JSON object with a weight_map)") from None
        files = [folder / name for name in sorted(set(weight_map.values()))]
    else:
        raise ConfigError(
            f"{folder} has {CONFIG_FILE} but no {WEIGHTS_FILE} (nor {WEIGHTS_INDEX_FILE}); "
            "expected the weights that transformers' save_pretrained writes"
        )
    state: dict[str, Tensor] = {}
    for path in files:
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; {index_path} names it as a shard")
        state.update(read_safetensors(path)[0])
    return state, config


def write_hf_folder(folder: Path, state: Mapping[str, Tensor], config: Mapping[str, Any]) -> dict[str, Tensor]:
    """Write a vanilla backbone as a transformers model folder; returns the weights written."""
    folder.mkdir(parents=True, exist_ok=True)
    hf_state = dinov2_to_hf(state, config["depth"])
    dtype = state["cls_token"].dtype
    (folder / CONFIG_FILE).write_text(json.dumps(hf_config_from_backbone(config, dtype), indent=2) + "\n")
    write_safetensors(folder / WEIGHTS_FILE, hf_state, {"format": "pt"})
    return hf_state


def _square(size: object, name: str, source: str) -> int:
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ConfigError(f"{source}: {name}={list(size)}; this backbone takes square images and patches")
        size = size[0]
    return int(size)  # type: ignore[arg-type]
