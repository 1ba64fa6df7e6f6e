"""Backbones with every parameter drawn at random, so that a wrong mapping cannot hide.

At initialisation LayerScale is ``1e-5`` (the blocks barely count), norms are ``1, 0`` and biases
are zero: a swapped ``q``/``k``, a dropped bias or an unmapped norm would still give nearly the
same features. Here norm weights lie around 1, LayerScale around 0.5, biases and tokens are
non-zero, and a specialized model's prefix parameters differ from the shared ones.
"""

import torch
from torch import nn

from clsvit_lightning.models import VisionTransformer


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    norms = {
        id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for n, p in m.named_parameters() if "weight" in n
    }
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("gamma", "prefix_gamma", "lambda1"):  # LayerScale (ours, timm; transformers)
                parameter.copy_(0.5 + 0.2 * noise)
            elif id(parameter) in norms:
                parameter.copy_(1 + 0.2 * noise)
            elif parameter.ndim == 1:  # biases
                parameter.copy_(0.1 * noise)
            else:  # matrices, convolution, tokens, position embedding
                parameter.copy_(0.05 * noise)
    return model.eval()


def random_backbone(seed: int = 0, **kwargs) -> VisionTransformer:
    """A small backbone (patch 14, 3 x 3 patches at 42 px) with random parameters, in eval mode."""
    defaults = dict(img_size=42, patch_size=14, embed_dim=64, depth=2, num_heads=2)
    return randomize(VisionTransformer(**{**defaults, **kwargs}), seed)


def features(model: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """``[B, 1 + R + N, D]``: [CLS], registers and patches after the final norm."""
    with torch.no_grad():
        out = model.forward_features(images)
    return torch.cat([out["x_norm_clstoken"][:, None], out["x_norm_regtokens"], out["x_norm_patchtokens"]], dim=1)
