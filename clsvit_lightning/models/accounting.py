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


def _addmm_flops(self_shape, a_shape, b_shape, *args, **kwargs) -> int:  # noqa: ANN001, ANN002, ANN003
    """``out.addmm_(a, b)``: ``[n, k] @ [k, m]``, 2 FLOPs per multiply-add (shapes, as FlopCounterMode passes them)."""
    (n, k), (_, m) = a_shape, b_shape
    return 2 * n * k * m


def _baddbmm_flops(self_shape, a_shape, b_shape, *args, **kwargs) -> int:  # noqa: ANN001, ANN002, ANN003
    """``out.baddbmm_(a, b)``: ``[B, n, k] @ [B, k, m]``."""
    (batch, n, k), (_, _, m) = a_shape, b_shape
    return 2 * batch * n * k * m


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
    # The blocks accumulate their output GEMMs into the residual in place (`Block._residual_linear`);
    # FlopCounterMode only knows the out-of-place ops, so the in-place ones get the same formulas.
    in_place = {torch.ops.aten.addmm_: _addmm_flops, torch.ops.aten.baddbmm_: _baddbmm_flops}
    with FlopCounterMode(display=False, custom_mapping=in_place) as counter, torch.no_grad():
        meta_model.forward_features(images)
    return int(counter.get_total_flops())
