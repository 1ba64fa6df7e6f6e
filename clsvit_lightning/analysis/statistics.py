"""The token-interaction statistics of the paper's analysis (Marouani et al., arXiv 2602.08626), on plain tensors.

Every function takes the token groups of one position of the residual stream, batched over
images, and returns Python floats/lists so that the results go straight into the JSON report:

* ``cls [B, D]``: the [CLS] token of each image;
* ``registers [B, R, D]``: the register tokens (``R`` may be 0);
* ``patches [B, N, D]``: the patch tokens.

Similarities are computed within each image, then averaged over the images: tokens of two
different images are never compared.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_EPS = 1e-8


def _unit(tokens: Tensor) -> Tensor:
    """Tokens scaled to unit L2 norm along the channels (zero tokens stay zero)."""
    tokens = tokens.float()
    return tokens / tokens.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def cls_patch_similarity(cls: Tensor, patches: Tensor) -> float:
    """Mean cosine similarity between [CLS] and the patches of its image.

    ``(1/B) sum_b (1/N) sum_j cos(cls_b, p_bj)``.
    """
    return (_unit(patches) @ _unit(cls).unsqueeze(-1)).mean().item()  # [B, N, 1]


def patch_patch_similarity(patches: Tensor) -> float:
    """Mean cosine similarity over the ordered pairs of distinct patches of one image.

    ``(1/B) sum_b 1/(N(N-1)) sum_{j != k} cos(p_bj, p_bk)``, computed in ``O(N D)`` from
    ``sum_{j != k} u_j . u_k = |sum_j u_j|^2 - sum_j |u_j|^2`` with ``u = p / |p|``.
    """
    num_patches = patches.shape[1]
    if num_patches < 2:
        return float("nan")
    unit = _unit(patches)  # [B, N, D]
    total = unit.sum(dim=1).pow(2).sum(dim=-1)  # |sum_j u_j|^2, [B]
    self_terms = unit.pow(2).sum(dim=(1, 2))  # sum_j |u_j|^2 (N, or less for zero tokens), [B]
    return ((total - self_terms) / (num_patches * (num_patches - 1))).mean().item()


def register_patch_similarity(registers: Tensor, patches: Tensor) -> float | None:
    """Mean cosine similarity between every register and every patch of its image; None without registers.

    ``(1/B) sum_b 1/(R N) sum_r sum_j cos(r_br, p_bj)``.
    """
    if registers.shape[1] == 0:
        return None
    return (_unit(registers) @ _unit(patches).transpose(1, 2)).mean().item()  # [B, R, N]


def similarities(cls: Tensor, registers: Tensor, patches: Tensor) -> dict[str, float | None]:
    """The three similarities of one position: ``cls_patch``, ``patch_patch``, ``register_patch``."""
    return {
        "cls_patch": cls_patch_similarity(cls, patches),
        "patch_patch": patch_patch_similarity(patches),
        "register_patch": register_patch_similarity(registers, patches),
    }


def channel_magnitudes(cls: Tensor, patches: Tensor, top_k: int = 8) -> dict[str, object]:
    """Per-channel mean magnitude by token type, and the channels most specific to each type.

    ``m_cls[c] = mean_b |cls_bc|``, ``m_patch[c] = mean_{b,j} |p_bjc|`` and the specificity
    ``s[c] = (m_cls[c] - m_patch[c]) / (m_cls[c] + m_patch[c])`` in ``[-1, 1]``: +1 for a channel
    that only [CLS] uses, -1 for a channel that only the patches use. ``cls_specific`` lists the
    ``top_k`` channels of largest ``s`` (most [CLS]-only first), ``patch_specific`` those of
    smallest ``s``; ``mean_abs_specificity`` is ``mean_c |s[c]|`` (0: both types use every
    channel alike).
    """
    cls_magnitude = cls.float().abs().mean(dim=0)  # [D]
    patch_magnitude = patches.float().abs().mean(dim=(0, 1))  # [D]
    specificity = (cls_magnitude - patch_magnitude) / (cls_magnitude + patch_magnitude).clamp_min(_EPS)
    top_k = min(top_k, specificity.numel())
    order = torch.argsort(specificity, descending=True, stable=True)
    return {
        "cls_magnitude": cls_magnitude.tolist(),
        "patch_magnitude": patch_magnitude.tolist(),
        "specificity": specificity.tolist(),
        "cls_specific": order[:top_k].tolist(),
        "patch_specific": order.flip(0)[:top_k].tolist(),
        "mean_abs_specificity": specificity.abs().mean().item(),
    }


def token_norms(cls: Tensor, registers: Tensor, patches: Tensor, outlier_ratio: float = 3.0) -> dict[str, object]:
    """L2 norms of the tokens and the high-norm outlier patches (Darcet et al., ICLR 2024).

    A patch is an outlier when its norm exceeds ``outlier_ratio`` times the median patch norm of
    its own image: the rule is scale-free, so it holds at every depth and for every model size,
    and the median is not pulled up by the few outliers it is meant to find.
    """
    patch_norms = patches.float().norm(dim=-1)  # [B, N]
    median = patch_norms.median(dim=1, keepdim=True).values  # [B, 1]
    outliers = patch_norms > outlier_ratio * median  # [B, N]
    return {
        "cls": cls.float().norm(dim=-1).mean().item(),
        "registers": registers.float().norm(dim=-1).mean().item() if registers.shape[1] else None,
        "patch_mean": patch_norms.mean().item(),
        "patch_median": median.mean().item(),
        "patch_max": patch_norms.max().item(),
        "outliers": int(outliers.sum().item()),
        "outliers_per_image": outliers.sum(dim=1).float().mean().item(),
        "outlier_fraction": outliers.float().mean().item(),
    }


def cls_attention_to_patches(attention: Tensor, num_prefix_tokens: int) -> tuple[Tensor, Tensor]:
    """Split the [CLS] row of ``attention [B, heads, T_q, T]`` (query 0 is [CLS]) into its patch part.

    Returns ``(maps [B, heads, N], patch_mass [B, heads])``: ``maps`` is the [CLS] row over the
    patches renormalised to sum to one (the spatial distribution), ``patch_mass`` the share of
    [CLS] attention that goes to patches rather than to [CLS] itself and the registers.
    """
    row = attention[:, :, 0, num_prefix_tokens:].float()  # [B, heads, N]
    patch_mass = row.sum(dim=-1)  # [B, heads]
    return row / patch_mass.unsqueeze(-1).clamp_min(_EPS), patch_mass


def attention_entropy(maps: Tensor) -> Tensor:
    """Entropy in nats of each distribution ``maps [..., N]``: ``-sum_j p_j log p_j`` (0 log 0 = 0)."""
    return -(maps * maps.clamp_min(1e-30).log()).sum(dim=-1)


def attention_statistics(attention: Tensor, num_prefix_tokens: int) -> tuple[dict[str, list[float]], Tensor]:
    """Per-head [CLS]->patch entropy and patch mass, averaged over the images; and the maps.

    ``entropy_normalized = entropy / log N`` lies in ``[0, 1]`` whatever the input size (1: the
    [CLS] token attends to all patches uniformly). Returns the JSON entry and ``maps [B, heads, N]``.
    """
    maps, patch_mass = cls_attention_to_patches(attention, num_prefix_tokens)
    entropy = attention_entropy(maps)  # [B, heads]
    num_patches = maps.shape[-1]
    scale = math.log(num_patches) if num_patches > 1 else 1.0
    entry = {
        "entropy": entropy.mean(dim=0).tolist(),
        "entropy_normalized": (entropy / scale).mean(dim=0).tolist(),
        "patch_mass": patch_mass.mean(dim=0).tolist(),
    }
    return entry, maps
