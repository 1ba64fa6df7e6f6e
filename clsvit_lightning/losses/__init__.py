"""Self-supervised losses and teacher targets (DINO, iBOT, KoLeo). Pure PyTorch: imports without Lightning."""

from clsvit_lightning.losses.dino_clstoken_loss import DINOLoss
from clsvit_lightning.losses.ibot_patch_loss import iBOTPatchLoss, masks_weight_from_masks
from clsvit_lightning.losses.koleo_loss import KoLeoLoss
from clsvit_lightning.losses.teacher_targets import (
    CenteringTargets,
    TeacherTargetMethod,
    sinkhorn_knopp,
    teacher_probabilities,
)

__all__ = [
    "CenteringTargets",
    "DINOLoss",
    "KoLeoLoss",
    "TeacherTargetMethod",
    "iBOTPatchLoss",
    "masks_weight_from_masks",
    "sinkhorn_knopp",
    "teacher_probabilities",
]
