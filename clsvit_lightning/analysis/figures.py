"""The figures of one analysis: drawn from the report and the images, saved as PNG, rendered for loggers.

Each ``plot_*`` function returns a matplotlib ``Figure`` built with the object API (no pyplot
state), so it works under any backend and in a training process. :func:`make_figures` draws them
all; :func:`save_figures` writes the PNGs; :func:`figure_to_array` renders one for image loggers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from clsvit_lightning.analysis.recorder import TokenAnalysis
from clsvit_lightning.data.transforms.tensors import IMAGENET_MEAN, IMAGENET_STD


# ---------------------------------------------------------------- all of them
def make_figures(
    analysis: TokenAnalysis,
    images: Tensor,
    attention_blocks: list[int] | None = None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> dict[str, Figure]:
    """Figure name -> figure. ``attention_blocks``: blocks whose attention maps are drawn (default: the last).

    ``images [B, 3, H, W]`` are the normalised inputs of the analysis (``mean``/``std`` undo it).
    Names: ``similarity_vs_depth``, ``channel_magnitudes_norm1``, ``channel_magnitudes_norm2``,
    ``attention_entropy``, ``token_norms``, ``attention_block{i}`` (two-digit ``i``), ``pca``.
    """
    report = analysis.report
    depth = report["model"]["depth"]
    figures = {
        "similarity_vs_depth": plot_similarity_vs_depth(report),
        "channel_magnitudes_norm1": plot_channel_magnitudes(report, "norm1"),
        "channel_magnitudes_norm2": plot_channel_magnitudes(report, "norm2"),
        "attention_entropy": plot_attention_entropy(report),
        "token_norms": plot_token_norms(report),
    }
    pictures = displayable(images, mean, std)
    for block in attention_blocks if attention_blocks is not None else [-1]:
        if not -depth <= block < depth:
            raise ValueError(f"attention_blocks: block {block} is out of range; valid blocks are 0..{depth - 1}")
        figures[f"attention_block{block % depth:02d}"] = plot_attention_maps(pictures, analysis.cls_attention, block)
    figures["pca"] = plot_pca(pictures, analysis.patch_features)
    return figures


def save_figures(figures: dict[str, Figure], out_dir: str | Path, dpi: int = 100) -> dict[str, Path]:
    """Write each figure as ``<out_dir>/<name>.png``; returns name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, figure in figures.items():
        paths[name] = out_dir / f"{name}.png"
        figure.savefig(paths[name], dpi=dpi)
    return paths


def figure_to_array(figure: Figure, dpi: int = 100) -> np.ndarray:
    """Render a figure to an ``[H, W, 3]`` uint8 array (what image loggers take)."""
    figure.set_dpi(dpi)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# --------------------------------------------------- from the report alone
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


# ------------------------------------------------------ beside the images
def displayable(
    images: Tensor, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> np.ndarray:
    """Undo the input normalisation: ``[B, 3, H, W]`` normalised -> ``[B, H, W, 3]`` in ``[0, 1]``."""
    array = images.detach().float().cpu().numpy().transpose(0, 2, 3, 1)  # [B, H, W, 3]
    return np.clip(array * np.asarray(std) + np.asarray(mean), 0.0, 1.0)


def _hide_ticks(axis) -> None:  # noqa: ANN001
    axis.set_xticks([])
    axis.set_yticks([])


def plot_attention_maps(pictures: np.ndarray, cls_attention: Tensor, block: int, max_images: int = 4) -> Figure:
    """[CLS]->patch attention of every head of ``block``, beside each image.

    ``pictures [B, H, W, 3]`` (see :func:`displayable`), ``cls_attention [depth, B, heads, h, w]``.
    Each map is scaled to its own maximum: the figure shows *where* a head looks; how spread its
    attention is, is the entropy in the report.
    """
    depth, batch, heads = cls_attention.shape[:3]
    if not -depth <= block < depth:
        raise ValueError(f"attention block {block} is out of range for a model of depth {depth}")
    block = block % depth
    rows = min(batch, max_images)
    figure = Figure(figsize=(1.6 * (heads + 1), 1.7 * rows), layout="constrained")
    axes = figure.subplots(rows, heads + 1, squeeze=False)
    extent = (0, pictures.shape[2], pictures.shape[1], 0)  # stretch the patch grid over the image
    for row in range(rows):
        axes[row, 0].imshow(pictures[row])
        _hide_ticks(axes[row, 0])
        for head in range(heads):
            attention = cls_attention[block, row, head].numpy()  # [h, w]
            axis = axes[row, head + 1]
            axis.imshow(attention / max(attention.max(), 1e-12), cmap="inferno", extent=extent, vmin=0, vmax=1)
            _hide_ticks(axis)
            if row == 0:
                axis.set_title(f"head {head}", fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
    figure.suptitle(f"[CLS] -> patch attention, block {block}", fontsize=9)
    return figure


def plot_pca(pictures: np.ndarray, patch_features: Tensor, max_images: int = 8) -> Figure:
    """Each image beside the first three principal components of its final patch features, as RGB."""
    rows = min(pictures.shape[0], max_images)
    colours = pca_rgb(patch_features).numpy()  # [B, h, w, 3]
    extent = (0, pictures.shape[2], pictures.shape[1], 0)
    figure = Figure(figsize=(4, 2 * rows), layout="constrained")
    axes = figure.subplots(rows, 2, squeeze=False)
    for row in range(rows):
        axes[row, 0].imshow(pictures[row])
        axes[row, 1].imshow(colours[row], extent=extent, interpolation="nearest")
        _hide_ticks(axes[row, 0])
        _hide_ticks(axes[row, 1])
    axes[0, 0].set_title("image", fontsize=8)
    axes[0, 1].set_title("PCA of patch features", fontsize=8)
    return figure


def pca_rgb(patch_features: Tensor, low_quantile: float = 0.01, high_quantile: float = 0.99) -> Tensor:
    """Project ``patch_features [B, h, w, D]`` on their first 3 principal components, as colours.

    One PCA is fitted on the patches of all images together, so a colour means the same
    direction in every image: ``x -> (x - mean) V[:, :3]`` with ``V`` the right singular vectors
    of the centred ``[B*h*w, D]`` matrix. Each component is then mapped to ``[0, 1]`` between its
    ``low_quantile`` and ``high_quantile`` values (robust to the few high-norm outliers). Signs
    are fixed so that each component's largest projection is positive (a deterministic picture).
    Returns ``[B, h, w, 3]`` in ``[0, 1]``.
    """
    batch, height, width, dim = patch_features.shape
    flat = patch_features.reshape(-1, dim).double()  # [B*h*w, D]
    centred = flat - flat.mean(dim=0, keepdim=True)
    _, _, right = torch.linalg.svd(centred, full_matrices=False)  # right: [min(M, D), D]
    components = right[:3].T  # [D, <=3]
    projected = centred @ components  # [M, <=3]
    signs = torch.sign(projected.gather(0, projected.abs().argmax(dim=0, keepdim=True)))  # [1, <=3]
    projected = projected * torch.where(signs == 0, torch.ones_like(signs), signs)
    if projected.shape[1] < 3:  # fewer patches or channels than 3: pad with a neutral grey
        projected = torch.cat([projected, projected.new_zeros(projected.shape[0], 3 - projected.shape[1])], dim=1)
    low = torch.quantile(projected, low_quantile, dim=0, keepdim=True)
    high = torch.quantile(projected, high_quantile, dim=0, keepdim=True)
    rgb = ((projected - low) / (high - low).clamp_min(1e-12)).clamp(0.0, 1.0)
    return rgb.reshape(batch, height, width, 3).float()  # [M, 3] -> [B, h, w, 3]
