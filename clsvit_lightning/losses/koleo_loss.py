"""KoLeo regulariser: spread features uniformly by pushing each one away from its nearest neighbour.

Kozachenko-Leonenko differential-entropy estimator as a loss (Sablayrolles et al. 2019, "Spreading
vectors for similarity search"), used by DINOv2 (Oquab et al. 2023) on the student's pre-head [CLS]
features, one global crop at a time (``dinov2/train/ssl_meta_arch.py``)::

    koleo_term = koleo_loss_weight * sum(KoLeoLoss()(student_cls[crop]) for crop in global_crops)

a sum, not a mean: each of the 2 global crops adds ``koleo_loss_weight`` (0.1) times its loss. One
call of this module is one crop's term (``DINOv2Pretraining.compute_losses`` does the sum).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KoLeoLoss(nn.Module):
    """Minus the mean log distance of each L2-normalised feature to its nearest other feature::

        x_i = features[i] / max(||features[i]||, eps)
        nn(i) = argmax_{j != i} <x_i, x_j>            # nearest neighbour on the sphere
        loss = -mean_i log(||x_i - x_nn(i) + eps|| + eps)

    The distance is ``nn.PairwiseDistance(p=2, eps=eps)``, which adds ``eps`` inside the norm, exactly
    as DINOv2 computes it. The neighbour search carries no gradient; the distance does. The batch is
    the local one (not gathered across ranks). ``features`` are one crop's: with both global crops in
    one batch, two crops of one image would be each other's nearest neighbour.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        self.pairwise_distance = nn.PairwiseDistance(p=2, eps=eps)

    def forward(self, features: Tensor) -> Tensor:  # features: [B, D]
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(
                f"expected features [B, D] with B >= 2 (each sample needs a neighbour), got {tuple(features.shape)}"
            )
        # Small distances in half precision would round to 0 and send the log to -inf.
        with torch.autocast(device_type=features.device.type, enabled=False):
            compute_dtype = torch.promote_types(features.dtype, torch.float32)
            normalized = F.normalize(features.to(compute_dtype), p=2, dim=-1, eps=self.eps)  # [B, D]
            nearest_index = self.nearest_neighbour_index(normalized)  # [B]
            distances = self.pairwise_distance(normalized, normalized[nearest_index])  # [B]
            return -torch.log(distances + self.eps).mean()

    @staticmethod
    @torch.no_grad()
    def nearest_neighbour_index(normalized: Tensor) -> Tensor:
        """``[B]`` index of each row's nearest other row by inner product (itself excluded)."""
        similarity = normalized @ normalized.T  # [B, B]
        similarity.fill_diagonal_(float("-inf"))  # a sample is not its own neighbour
        return similarity.argmax(dim=1)  # [B]
