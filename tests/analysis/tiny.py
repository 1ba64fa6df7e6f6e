"""Tiny backbones for the analysis tests (fast on 2 CPU cores)."""

import torch

from clsvit_lightning.models import VisionTransformer


def tiny_vit(specialization="vanilla", num_registers=0, embed_dim=48, depth=3, img_size=32, **kwargs):
    return VisionTransformer(
        img_size=img_size, patch_size=8, embed_dim=embed_dim, depth=depth, num_heads=3, num_registers=num_registers,
        specialization=specialization, layerscale_init=0.3, **kwargs,
    )  # fmt: skip


def trained_vit(specialization="vanilla", num_registers=0, **kwargs):
    """A model whose weights are far from init, as a real checkpoint's would be."""
    model = tiny_vit(specialization, num_registers, **kwargs)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    return model.eval()
