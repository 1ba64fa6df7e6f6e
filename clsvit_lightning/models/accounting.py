"""Parameter overhead and FLOPs of a (specialized) backbone: functions of the model.

``count_parameters(model)``, ``count_flops_per_image(model)`` and
``count_training_flops_per_image(model, batch_size)`` read a built :class:`VisionTransformer`; the
model itself knows nothing of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from clsvit_lightning.models.vision_transformer import VisionTransformer


@dataclass(frozen=True)
class ParameterCount:
    total: int
    unspecialized: int  # the same architecture with every component shared

    @property
    def overhead(self) -> float:
        """Extra parameters of the specialization, as a fraction of the unspecialized model."""
        return self.total / self.unspecialized - 1.0


def count_parameters(model: torch.nn.Module) -> ParameterCount:
    """Count parameters; the ``prefix_*`` twins are exactly what specialization adds."""
    total = extra = 0
    for name, parameter in model.named_parameters():
        total += parameter.numel()
        if name.rsplit(".", 1)[-1].startswith("prefix_"):
            extra += parameter.numel()
    return ParameterCount(total=total, unspecialized=total - extra)


def count_flops_per_image(model: VisionTransformer, img_size: int | tuple[int, int] | None = None) -> int:
    """Forward FLOPs of one image (a multiply-add counts 2), counted by ``FlopCounterMode`` on a meta-device copy.

    Only matmuls, convolutions and attention are counted (norms and elementwise ops are not),
    which is the usual convention of FLOP tables: SwiGLU counts its three matmuls (``w1``, ``w2``,
    ``w3``); RoPE's rotation of the patches' queries and keys is element-wise (``x cos + rot(x) sin``,
    3 FLOPs per element, ``6 N D`` per block: 0.06 % of a DINOv3 ViT-S/16 block at 224 px) and
    counts nothing, as a learned position embedding's addition. ``img_size``: default the model's;
    an ``(H, W)`` pair for other or non-square inputs.
    """
    size = img_size if img_size is not None else model.config["img_size"]
    height, width = (size, size) if isinstance(size, int) else size
    with torch.device("meta"):
        meta_model = VisionTransformer(**model.config).eval()
        images = torch.empty(1, model.config["in_chans"], height, width)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta_model.forward_features(images)
    return int(counter.get_total_flops())


def count_training_flops_per_image(
    model: VisionTransformer,
    batch_size: int,
    img_size: int | tuple[int, int] | None = None,
    forward_flops: float | None = None,
) -> float:
    """Forward FLOPs per image of a training batch of ``batch_size`` images.

    Batch-subset stochastic depth runs each block's branches on ``max(int(B * (1 - rate)), 1)`` of
    the ``B`` images, so those blocks count that fraction of their FLOPs (the patch embedding
    always runs on all of them). ``forward_flops``: :func:`count_flops_per_image` at this size, if
    the caller already counted it.
    """
    size = img_size if img_size is not None else model.config["img_size"]
    height, width = (size, size) if isinstance(size, int) else size
    total = count_flops_per_image(model, (height, width)) if forward_flops is None else forward_flops
    embed = 2 * (height // model.patch_size) * (width // model.patch_size) * model.patch_embed.proj.weight[0].numel()
    embed *= model.embed_dim
    per_block = (total - embed) / model.depth
    return embed + per_block * sum(block.work_fraction(batch_size) for block in model.blocks)
