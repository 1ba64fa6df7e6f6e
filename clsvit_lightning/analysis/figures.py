"""All the figures of one analysis: build, save as PNG, convert for loggers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from clsvit_lightning.analysis.image_plots import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    displayable,
    plot_attention_maps,
    plot_pca,
)
from clsvit_lightning.analysis.plots import (
    plot_attention_entropy,
    plot_channel_magnitudes,
    plot_similarity_vs_depth,
    plot_token_norms,
)
from clsvit_lightning.analysis.recorder import TokenAnalysis


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
