"""The analysis JSON: its documented key set, saving, and a scalar summary for loggers.

## Analysis report (`analysis.json`)

One object; keys are stable across models (vanilla or specialized, with or without registers,
any input size) and versioned by `schema_version`. Similarities are mean cosine similarities
computed within each image and averaged over the images; `register_patch` and
`token_norms.registers` are `null` without registers.

| key | meaning |
|---|---|
| `schema_version` | format version of this file (3) |
| `model.specialization` | spec string of the model, explicit block ranges (`Specialization.parse` reads it) |
| `model.patch_size`, `model.embed_dim`, `model.depth`, `model.num_heads`, `model.qkv_bias` | architecture |
| `model.num_registers` | register tokens `R` |
| `model.num_prefix_tokens` | tokens before the patches in the sequence (`1 + R`) |
| `model.num_prefix_path_tokens` | tokens taking the prefix parameters (`1 + R`, or 1 with `registers_path:patch`) |
| `model.num_parameters` | parameter count of the backbone |
| `model.position_encoding` | `learned` (DINOv2's `pos_embed`) or `rope` (DINOv3; attention maps include the rotation) |
| `model.ffn_layer` | `mlp` or a SwiGLU (`swiglu`, `swiglu64`, ...) |
| `input.num_images`, `input.height`, `input.width` | the analysed batch |
| `input.grid` | `[h, w]` patch grid; `input.num_patches` = `h * w` |
| `settings.top_channels` | channels listed in `cls_specific` / `patch_specific` |
| `settings.outlier_ratio` | outlier: a patch whose norm exceeds this multiple of its image's median patch norm |
| `blocks[]` | one entry per block, in order; `blocks[].index` is its index |
| `blocks[].norm1`, `blocks[].norm2` | a *norm entry* (below) for the pre-attention and the pre-MLP norm |
| `blocks[].attention.entropy` | per head: entropy (nats) of [CLS]'s attention over the patches, renormalised |
| `blocks[].attention.entropy_normalized` | per head: the same divided by `log N` (1 = uniform) |
| `blocks[].attention.patch_mass` | per head: share of [CLS]'s attention on patches (vs [CLS] and registers) |
| `blocks[].token_norms.cls`, `.registers` | mean L2 norm of [CLS] / of the registers at the block output |
| `blocks[].token_norms.patch_mean`, `.patch_median`, `.patch_max` | patch-token L2 norms at the block output |
| `blocks[].token_norms.outliers` | high-norm outlier patches in the batch; `.outliers_per_image`, `.outlier_fraction` |
| `final_norm` | a *norm entry* for the final norm |

A *norm entry* describes one LayerNorm:

| key | meaning |
|---|---|
| `pre.cls_patch`, `pre.patch_patch`, `pre.register_patch` | similarities of the residual stream entering the norm |
| `post.cls_patch`, `post.patch_patch`, `post.register_patch` | after the norm, as the model computes it |
| `paths.prefix.*`, `paths.patch.*` | after the norm when *all* tokens take the prefix (resp. patch) parameters |
| `path_weight_cosine` | cosine between the prefix-path and patch-path scale vectors (1 when shared) |
| `channels.cls_magnitude`, `.patch_magnitude` | per channel: mean absolute value of [CLS] / of patches after the norm |
| `channels.specificity` | per channel `(m_cls - m_patch) / (m_cls + m_patch)`: +1 [CLS]-only, -1 patch-only |
| `channels.cls_specific`, `channels.patch_specific` | indices of the most [CLS]-only / patch-only channels |
| `channels.mean_abs_specificity` | mean absolute specificity over the channels |
| `channels_pre.*` | the same for the norm's input |
"""

from __future__ import annotations

import json
import math
from pathlib import Path

_SIMILARITIES = ("cls_patch", "patch_patch", "register_patch")
_CHANNELS = ("cls_magnitude", "patch_magnitude", "specificity", "cls_specific", "patch_specific")
NORM_ENTRY_KEYS = frozenset(
    [f"{stage}.{name}" for stage in ("pre", "post", "paths.prefix", "paths.patch") for name in _SIMILARITIES]
    + ["path_weight_cosine"]
    + [f"{group}.{name}" for group in ("channels", "channels_pre") for name in (*_CHANNELS, "mean_abs_specificity")]
)
_TOP_KEYS = (
    ["schema_version"]
    + [
        f"model.{name}"
        for name in (
            "specialization",
            "patch_size",
            "embed_dim",
            "depth",
            "num_heads",
            "qkv_bias",
            "num_registers",
            "num_prefix_tokens",
            "num_prefix_path_tokens",
            "num_parameters",
            "position_encoding",
            "ffn_layer",
        )
    ]  # fmt: skip
    + [f"input.{name}" for name in ("num_images", "height", "width", "grid", "num_patches")]
    + ["settings.top_channels", "settings.outlier_ratio", "blocks[].index"]
    + [f"blocks[].attention.{name}" for name in ("entropy", "entropy_normalized", "patch_mass")]
    + [
        f"blocks[].token_norms.{name}"
        for name in (
            "cls",
            "registers",
            "patch_mean",
            "patch_median",
            "patch_max",
            "outliers",
            "outliers_per_image",
            "outlier_fraction",
        )
    ]  # fmt: skip
)
REPORT_KEYS = frozenset(
    _TOP_KEYS
    + [f"{norm}.{key}" for norm in ("blocks[].norm1", "blocks[].norm2", "final_norm") for key in NORM_ENTRY_KEYS]
)
"""Every leaf key of the report, lists of objects written ``name[]`` (what the docstring documents)."""


def report_keys(value: object, prefix: str = "") -> set[str]:
    """The leaf keys of a nested dict, dotted; a list of dicts adds ``[]``; lists of numbers are leaves."""
    if isinstance(value, dict):
        keys: set[str] = set()
        for name, child in value.items():
            keys |= report_keys(child, f"{prefix}.{name}" if prefix else name)
        return keys
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return set().union(*(report_keys(item, f"{prefix}[]") for item in value))
    return {prefix}


def _finite(value: object) -> object:
    """NaN/inf -> None: JSON has no NaN, and ``json.dump`` would write an invalid file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_finite(child) for child in value]
    return value


def save_report(report: dict, path: str | Path) -> Path:
    """Write ``report`` as JSON (NaN written as null) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(report), indent=1))
    return path


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def scalar_summary(report: dict, prefix: str = "analysis") -> dict[str, float]:
    """A few scalars for metric loggers: block-averaged similarities, specificity, outliers, entropy."""
    blocks = report["blocks"]
    summary: dict[str, float | None] = {}
    for norm in ("norm1", "norm2"):
        for stage in ("pre", "post"):
            for name in ("cls_patch", "patch_patch"):
                summary[f"{prefix}/{norm}_{stage}_{name}"] = _mean([b[norm][stage][name] for b in blocks])
        summary[f"{prefix}/{norm}_channel_specificity"] = _mean(
            [b[norm]["channels"]["mean_abs_specificity"] for b in blocks]
        )
    for name in ("cls_patch", "patch_patch"):
        summary[f"{prefix}/final_norm_post_{name}"] = report["final_norm"]["post"][name]
    summary[f"{prefix}/last_block_outliers_per_image"] = blocks[-1]["token_norms"]["outliers_per_image"]
    summary[f"{prefix}/last_block_cls_attention_entropy"] = _mean(blocks[-1]["attention"]["entropy_normalized"])
    return {key: value for key, value in summary.items() if value is not None and math.isfinite(value)}
