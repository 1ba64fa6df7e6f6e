"""DINO loss on the [CLS] token: cross-entropy between teacher and student prototype distributions.

DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers"), with the crop
pairing and weighting of DINOv2 (Oquab et al. 2023): every student crop (global and local) is trained
against every teacher global view, except a global crop against the teacher's view of itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DINOLoss(nn.Module):
    """Average cross-entropy over (student crop, teacher view) pairs, same-view global pairs excluded.

    Inputs are crop-major: ``student_logits`` is ``[S, B, K]`` (S student crops, the first T of them
    the global crops, in the teacher's view order), ``teacher_probs`` is ``[T, B, K]`` (already
    centred-softmaxed or Sinkhorn-Knopp targets). The loss computed is::

        pairs = [(s, t) for s in range(S) for t in range(T) if s != t]   # s == t only for global s < T
        loss = 0
        for s, t in pairs:
            log_p = log_softmax(student_logits[s] / student_temperature, dim=-1)   # [B, K]
            loss += mean_over_b(-sum_k teacher_probs[t, b, k] * log_p[b, k])
        loss /= len(pairs)

    With S = 2 global + 8 local crops and T = 2 views this averages 2 + 16 = 18 pairs, which is
    DINOv2's net weighting (its ``loss_scales = 2`` on the global term and ``/ 18`` cancel to this).
    """

    def __init__(self, student_temperature: float = 0.1) -> None:
        super().__init__()
        if student_temperature <= 0:
            raise ValueError(f"student_temperature must be positive, got {student_temperature}")
        self.student_temperature = student_temperature

    @staticmethod
    def pair_count(num_student_crops: int, num_teacher_views: int) -> int:
        """Number of (student crop, teacher view) pairs averaged: all pairs minus the same-view ones."""
        same_view_pairs = min(num_student_crops, num_teacher_views)
        return num_student_crops * num_teacher_views - same_view_pairs

    @classmethod
    def pair_weights(
        cls,
        num_student_crops: int,
        num_teacher_views: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``[S, T]`` weights of each pair in the average: 1 / pair_count, 0 on same-view pairs."""
        num_pairs = cls.pair_count(num_student_crops, num_teacher_views)
        if num_pairs == 0:
            raise ValueError(
                f"no (student crop, teacher view) pair left with {num_student_crops} student crops "
                f"and {num_teacher_views} teacher views: each global crop only meets its own view"
            )
        weights = torch.full((num_student_crops, num_teacher_views), 1.0 / num_pairs, device=device, dtype=dtype)
        same_view = torch.arange(min(num_student_crops, num_teacher_views), device=device)
        weights[same_view, same_view] = 0.0  # a global crop is never trained against its own teacher view
        return weights  # [S, T]

    def forward(self, student_logits: Tensor, teacher_probs: Tensor) -> Tensor:
        student_log_probs, teacher_probs = self._log_probs_and_targets(student_logits, teacher_probs)
        num_student_crops, batch_size, _ = student_log_probs.shape
        weights = self.pair_weights(
            num_student_crops, teacher_probs.shape[0], device=student_log_probs.device, dtype=student_log_probs.dtype
        )
        # [S, B, K] x [T, B, K] x [S, T] -> weighted sum over pairs, prototypes and samples ...
        # (operands in this order so that einsum first contracts B and K to [S, T], never materialising
        # a [T, B, K] or larger intermediate)
        summed_over_batch = -torch.einsum("sbk,tbk,st->", student_log_probs, teacher_probs, weights)
        return summed_over_batch / batch_size  # ... whose sum over samples becomes a batch mean

    def pair_cross_entropy(self, student_logits: Tensor, teacher_probs: Tensor) -> Tensor:
        """``[S, T]`` batch-mean cross-entropy of every (student crop, teacher view) pair, none excluded.

        For logging and inspection; ``forward`` equals ``(pair_weights(S, T) * pair_cross_entropy).sum()``.
        """
        student_log_probs, teacher_probs = self._log_probs_and_targets(student_logits, teacher_probs)
        batch_size = student_log_probs.shape[1]
        return -torch.einsum("sbk,tbk->st", student_log_probs, teacher_probs) / batch_size  # [S, T]

    def _log_probs_and_targets(self, student_logits: Tensor, teacher_probs: Tensor) -> tuple[Tensor, Tensor]:
        self._check_shapes(student_logits, teacher_probs)
        compute_dtype = torch.promote_types(student_logits.dtype, torch.float32)  # float32 even for half inputs
        student_log_probs = F.log_softmax(student_logits.to(compute_dtype) / self.student_temperature, dim=-1)
        return student_log_probs, teacher_probs.to(compute_dtype)  # [S, B, K], [T, B, K]

    @staticmethod
    def _check_shapes(student_logits: Tensor, teacher_probs: Tensor) -> None:
        shapes = f"student_logits {tuple(student_logits.shape)}, teacher_probs {tuple(teacher_probs.shape)}"
        if student_logits.ndim != 3 or teacher_probs.ndim != 3:
            raise ValueError(f"expected student_logits [S, B, K] and teacher_probs [T, B, K], got {shapes}")
        if student_logits.shape[1:] != teacher_probs.shape[1:]:
            raise ValueError(f"batch size B and prototype count K must match, got {shapes}")
        if student_logits.shape[0] < teacher_probs.shape[0]:
            raise ValueError(f"need at least as many student crops S as teacher views T (S >= T), got {shapes}")
