"""DINOv3's official layout (``dinov3/models/vision_transformer.py``) <-> this backbone's.

The blocks keep their names (``blocks.{i}.attn.qkv.bias_mask`` and ``rope_embed.periods`` are
buffers here too); only the tokens and the untied norms move::

    storage_tokens [1, R, D]          register_tokens (the same place in the sequence: [CLS, R, patches])
    cls_norm.{weight, bias}           norm.prefix_{weight, bias}   (the ``final_norm`` specialization)
    local_cls_norm.{weight, bias}     dropped: DINOv3 applies it to local crops in training only

DINOv3's ``cls_norm`` normalises [CLS] and the storage tokens, which is what the prefix path of a
specialized final norm does when the registers follow [CLS] (``registers_path: cls``, the default).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.dinov3_keys import DINOv3Arch, infer_dinov3_arch

_TO_OURS = {
    "storage_tokens": "register_tokens",
    "cls_norm.weight": "norm.prefix_weight",
    "cls_norm.bias": "norm.prefix_bias",
}
_TO_DINOV3 = {ours: theirs for theirs, ours in _TO_OURS.items()}
TRAINING_ONLY = ("local_cls_norm.weight", "local_cls_norm.bias")


def dinov3_to_clsvit(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """``(state under this backbone's names, dropped keys)``; keys already ours pass as they are."""
    out, dropped = {}, []
    for key, value in state.items():
        if key in TRAINING_ONLY:
            dropped.append(key)
        else:
            out[_TO_OURS.get(key, key)] = value
    return out, dropped


def clsvit_to_dinov3(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our names -> DINOv3's, for a vanilla RoPE backbone or one whose only split is the final norm.

    Raises :class:`ConfigError` naming the keys DINOv3's ``DinoVisionTransformer`` has no place for
    (other ``prefix_*`` parameters, a learned ``pos_embed``).
    """
    unplaced = sorted(k for k in state if (".prefix_" in k and k not in _TO_DINOV3) or k == "pos_embed")
    if unplaced or "rope_embed.periods" not in state:
        what = ", ".join(unplaced[:10]) if unplaced else "a backbone without RoPE (no rope_embed.periods)"
        raise ConfigError(f"DINOv3's DinoVisionTransformer has no place for {what}")
    return {_TO_DINOV3.get(key, key): value for key, value in state.items()}


def dinov3_arch_of(state: Mapping[str, Tensor]) -> tuple[str | None, DINOv3Arch]:
    """The DINOv3 architecture a state dict holds (official names or ours) and its released name, if any.

    Our other ``prefix_*`` parameters (a specialized model) are left out: the shapes of the rest
    say the size.
    """
    official = {
        _TO_DINOV3.get(key, key): value for key, value in state.items() if ".prefix_" not in key or key in _TO_DINOV3
    }
    return infer_dinov3_arch(official)


def describe_dinov3(state: Mapping[str, Tensor]) -> str:
    """``"vits16: embed_dim=384, depth=12, ..."`` (or the architecture alone for an unreleased size)."""
    try:
        name, arch = dinov3_arch_of(state)
    except (ConfigError, KeyError, IndexError):
        return "an unrecognised DINOv3 layout"
    return f"{name}: {arch.describe()}" if name else arch.describe()
