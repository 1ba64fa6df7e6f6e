"""Parameter overhead and FLOPs of a (specialized) backbone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.utils.flop_counter import FlopCounterMode

if TYPE_CHECKING:
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
    """Forward FLOPs of one image, counted by ``FlopCounterMode`` on a meta-device copy.

    Only matmuls, convolutions and attention are counted (norms and elementwise ops are not),
    which is the usual convention of FLOP tables.
    """
    from clsvit_lightning.models.vision_transformer import VisionTransformer  # noqa: PLC0415 (cycle)

    size = img_size if img_size is not None else model.config["img_size"]
    height, width = (size, size) if isinstance(size, int) else size
    with torch.device("meta"):
        meta_model = VisionTransformer(**model.config).eval()
        images = torch.empty(1, model.config["in_chans"], height, width)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta_model.forward_features(images)
    return int(counter.get_total_flops())
