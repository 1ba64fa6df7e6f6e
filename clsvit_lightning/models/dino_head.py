"""DINO head: MLP, L2-normalised bottleneck, weight-normalised prototypes (``dinov2/layers/dino_head.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class WeightNormPrototypes(nn.Module):
    """``logits = x @ (g * v / ||v||).T``: cosine-like scores against K prototypes.

    Written out rather than through ``torch.nn.utils.parametrizations.weight_norm`` so that the
    state-dict keys are DINOv2's (``last_layer.weight_g`` ``[K, 1]``, ``last_layer.weight_v``
    ``[K, bottleneck]``) and the weight's normalisation stays in fp32 under mixed precision. The
    product follows autocast (bf16 logits under ``bf16-mixed``, as in DINOv3); the losses, centering
    and Sinkhorn-Knopp upcast the logits to fp32 before their softmaxes.
    """

    def __init__(self, in_dim: int, num_prototypes: int) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(num_prototypes, in_dim))
        self.weight_g = nn.Parameter(torch.ones(num_prototypes, 1))
        nn.init.trunc_normal_(self.weight_v, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight_g.float() * F.normalize(self.weight_v.float(), dim=1)  # [K, bottleneck]
        return F.linear(x, weight.to(x.dtype))


class DINOHead(nn.Module):
    """``Linear -> GELU -> Linear -> GELU -> Linear -> L2-normalise -> prototypes``."""

    def __init__(
        self,
        in_dim: int,
        num_prototypes: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"DINOHead num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for index, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            layers.append(nn.Linear(d_in, d_out))
            if index < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)  # keys mlp.0, mlp.2, mlp.4 as in DINOv2
        self.last_layer = WeightNormPrototypes(bottleneck_dim, num_prototypes)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.mlp(x)
        eps = 1e-6 if x.dtype == torch.float16 else 1e-12
        return self.last_layer(F.normalize(x, dim=-1, eps=eps))
