"""Figures drawn from the analysis report alone (no images needed): one function per figure.

Each function returns a matplotlib ``Figure`` built with the object API (no pyplot state), so it
works under any backend and in a training process; ``figures.py`` saves and logs them.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# Positions around the norms of a block, in forward order: (norm, stage, label).
_POSITIONS = (
    ("norm1", "pre", "before norm1"),
    ("norm1", "post", "after norm1"),
    ("norm2", "pre", "before norm2"),
    ("norm2", "post", "after norm2"),
)
_SIMILARITY_TITLES = {"cls_patch": "[CLS]–patch", "patch_patch": "patch–patch", "register_patch": "register–patch"}


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def plot_similarity_vs_depth(report: dict) -> Figure:
    """Mean cosine similarity against block index, before and after each norm (+ the final norm)."""
    blocks = report["blocks"]
    names = ["cls_patch", "patch_patch"] + (["register_patch"] if report["model"]["num_registers"] else [])
    figure = Figure(figsize=(5 * len(names), 4), layout="constrained")
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    depth = np.arange(len(blocks))
    final = report["final_norm"]
    for axis, name in zip(axes, names, strict=True):
        for (norm, stage, label), style in zip(_POSITIONS, ("--", "-", "--", "-"), strict=True):
            values = [_nan(block[norm][stage][name]) for block in blocks]
            color = "tab:blue" if norm == "norm1" else "tab:orange"
            axis.plot(depth, values, style, marker="o", markersize=3, color=color, label=label)
        axis.plot([len(blocks)], [_nan(final["pre"][name])], "s", color="gray", label="before final norm")
        axis.plot([len(blocks)], [_nan(final["post"][name])], "s", color="black", label="after final norm")
        axis.axhline(0.0, color="lightgray", linewidth=0.8)
        axis.set_title(f"{_SIMILARITY_TITLES[name]} cosine similarity")
        axis.set_xlabel("block (final norm at the right)")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel("mean cosine similarity")
    axes[0].legend(fontsize=7)
    figure.suptitle(f"Token similarity vs depth — {report['model']['specialization']}", fontsize=9)
    return figure


def plot_channel_magnitudes(report: dict, norm: str) -> Figure:
    """Heatmaps ``[blocks, channels]`` of [CLS] and patch magnitudes after ``norm``, and their specificity.

    ``norm`` is ``"norm1"`` or ``"norm2"``; the ``norm2`` figure ends with a row for the final norm.
    Magnitudes are divided by the row's maximum so that deep and shallow blocks share a colour scale.
    """
    if norm not in ("norm1", "norm2"):
        raise ValueError(f"plot_channel_magnitudes: norm must be 'norm1' or 'norm2', got {norm!r}")
    entries = [block[norm]["channels"] for block in report["blocks"]]
    labels = [str(block["index"]) for block in report["blocks"]]
    if norm == "norm2":
        entries.append(report["final_norm"]["channels"])
        labels.append("final")
    panels = (
        ("cls_magnitude", "[CLS] |x| (row-normalised)", "viridis", (0.0, 1.0)),
        ("patch_magnitude", "patch |x| (row-normalised)", "viridis", (0.0, 1.0)),
        ("specificity", "specificity (+1 [CLS]-only, −1 patch-only)", "coolwarm", (-1.0, 1.0)),
    )
    figure = Figure(figsize=(12, 1.2 + 0.25 * len(entries)), layout="constrained")
    axes = figure.subplots(1, 3, squeeze=False)[0]
    for axis, (key, title, colormap, (vmin, vmax)) in zip(axes, panels, strict=True):
        matrix = np.array([entry[key] for entry in entries], dtype=float)  # [rows, D]
        if key != "specificity":
            matrix = matrix / np.maximum(matrix.max(axis=1, keepdims=True), 1e-12)
        image = axis.imshow(matrix, aspect="auto", cmap=colormap, vmin=vmin, vmax=vmax, interpolation="nearest")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("channel")
        axis.set_yticks(range(len(labels)), labels, fontsize=6)
        figure.colorbar(image, ax=axis, shrink=0.8)
    axes[0].set_ylabel(f"block ({norm} output)")
    return figure


def plot_attention_entropy(report: dict) -> Figure:
    """Per block and head: normalised entropy of [CLS]->patch attention, and [CLS]'s attention mass on patches."""
    blocks = report["blocks"]
    entropy = np.array([block["attention"]["entropy_normalized"] for block in blocks])  # [depth, heads]
    mass = np.array([block["attention"]["patch_mass"] for block in blocks])  # [depth, heads]
    figure = Figure(figsize=(10, 1.5 + 0.3 * len(blocks)), layout="constrained")
    axes = figure.subplots(1, 2, squeeze=False)[0]
    for axis, matrix, title in (
        (axes[0], entropy, "[CLS]->patch entropy / log N (1 = uniform)"),
        (axes[1], mass, "[CLS] attention mass on patches"),
    ):
        image = axis.imshow(matrix, aspect="auto", cmap="magma", vmin=0.0, vmax=1.0, interpolation="nearest")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("head")
        axis.set_ylabel("block")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        figure.colorbar(image, ax=axis, shrink=0.8)
    return figure


def plot_token_norms(report: dict) -> Figure:
    """Token L2 norms at each block output and the number of high-norm outlier patches per image."""
    blocks = report["blocks"]
    depth = np.arange(len(blocks))
    norms = [block["token_norms"] for block in blocks]
    figure = Figure(figsize=(10, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    left.plot(depth, [n["cls"] for n in norms], marker="o", label="[CLS]")
    if report["model"]["num_registers"]:
        left.plot(depth, [n["registers"] for n in norms], marker="o", label="registers")
    left.plot(depth, [n["patch_median"] for n in norms], marker="o", label="patch median")
    left.plot(depth, [n["patch_max"] for n in norms], "--", label="patch max")
    left.set_yscale("log")
    left.set_xlabel("block")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel("L2 norm at block output")
    left.legend(fontsize=7)
    ratio = report["settings"]["outlier_ratio"]
    outliers = [n["outliers_per_image"] for n in norms]
    right.bar(depth, outliers, color="tab:red")
    right.set_ylim(0, max(1.0, 1.1 * max(outliers)))  # a readable axis when there are none
    right.set_xlabel("block")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylabel(f"outlier patches per image (norm > {ratio:g} x median)")
    return figure
