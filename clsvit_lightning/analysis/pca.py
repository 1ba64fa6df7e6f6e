"""PCA of patch features shown as RGB (the DINOv2 picture: similar parts get similar colours)."""

from __future__ import annotations

import torch
from torch import Tensor


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
