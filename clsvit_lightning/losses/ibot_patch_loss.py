"""iBOT loss on masked patch tokens: the student predicts the teacher's distribution at masked positions.

iBOT (Zhou et al. 2022, "iBOT: Image BERT Pre-Training with Online Tokenizer"), weighted as in DINOv2
(Oquab et al. 2023): each image's masked patches share one unit of weight, so the loss is an average
over images of the per-image mean cross-entropy, not a mean over all masked patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def masks_weight_from_masks(masks: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[M]`` weight of each masked patch: 1 / (number of masked patches in its image).

    ``masks`` is ``[N_images, N_patches]`` bool; the weights follow the order of ``masks.nonzero()``
    (equivalently of boolean indexing ``x[masks]``), the order in which masked tokens are gathered.
    """
    if masks.ndim != 2 or masks.dtype != torch.bool:
        raise ValueError(f"expected masks [N_images, N_patches] of dtype bool, got {tuple(masks.shape)} {masks.dtype}")
    masked_per_image = masks.sum(dim=1, keepdim=True, dtype=dtype)  # [N_images, 1]
    # Images without masked patches contribute no entry below, so their count never divides anything.
    weight_per_patch = (1.0 / masked_per_image.clamp(min=1.0)).expand(masks.shape)  # [N_images, N_patches]
    return weight_per_patch[masks]  # [M]


class iBOTPatchLoss(nn.Module):
    """Cross-entropy at masked patches, averaged per image, then over all global crops.

    Inputs are the M masked patch tokens of all global crops, gathered in ``masks.nonzero()`` order::

        CE_m = -sum_k teacher_patch_probs[m, k] * log_softmax(student_patch_logits[m] / student_temperature)_k
        loss = sum_m masks_weight[m] * CE_m / num_images

    With ``masks_weight[m] = 1 / (masked patches in the image of m)`` (see ``masks_weight_from_masks``)
    this is::

        loss = mean over the num_images global crops of (mean of CE_m over that crop's masked patches)

    where a crop without masked patches counts as 0, as in DINOv2.
    """

    def __init__(self, student_temperature: float = 0.1) -> None:
        super().__init__()
        if student_temperature <= 0:
            raise ValueError(f"student_temperature must be positive, got {student_temperature}")
        self.student_temperature = student_temperature

    def forward(
        self,
        student_patch_logits: Tensor,  # [M, K]
        teacher_patch_probs: Tensor,  # [M, K]
        masks_weight: Tensor,  # [M]
        num_images: int,
    ) -> Tensor:
        self._check_shapes(student_patch_logits, teacher_patch_probs, masks_weight, num_images)
        compute_dtype = torch.promote_types(student_patch_logits.dtype, torch.float32)  # float32 even for half
        student_log_probs = F.log_softmax(student_patch_logits.to(compute_dtype) / self.student_temperature, dim=-1)
        patch_cross_entropy = -(teacher_patch_probs.to(compute_dtype) * student_log_probs).sum(dim=-1)  # [M]
        # Each image's weights sum to 1, so the weighted sum is a sum of per-image means ...
        sum_of_per_image_means = (masks_weight.to(compute_dtype) * patch_cross_entropy).sum()
        return sum_of_per_image_means / num_images  # ... and dividing by the image count averages them

    @staticmethod
    def _check_shapes(student: Tensor, teacher: Tensor, masks_weight: Tensor, num_images: int) -> None:
        shapes = (
            f"student_patch_logits {tuple(student.shape)}, teacher_patch_probs {tuple(teacher.shape)}, "
            f"masks_weight {tuple(masks_weight.shape)}"
        )
        if student.ndim != 2 or student.shape != teacher.shape:
            raise ValueError(f"expected student_patch_logits and teacher_patch_probs both [M, K], got {shapes}")
        if masks_weight.shape != student.shape[:1]:
            raise ValueError(f"expected masks_weight [M] with M the number of masked patches, got {shapes}")
        if num_images < 1:
            raise ValueError(f"num_images must be at least 1, got {num_images}")
