"""Figures that show the analysed images: [CLS] attention maps and the PCA of patch features."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from clsvit_lightning.analysis.pca import pca_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
