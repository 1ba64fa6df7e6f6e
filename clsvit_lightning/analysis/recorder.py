"""Run a backbone on a batch of images and measure the token interaction at every position.

The analysis hooks into the model's own modules (``blocks[i].norm1``, ``.attn``, ``.norm2``,
the block outputs and the final ``norm``) and runs the real ``forward_features``: what it
measures is exactly what the model computes, for any specialization and register route. Each
hook reduces its tensors to statistics at once, so memory stays that of one forward pass.

Positions measured per block ``i`` (pre-norm residual stream, DINOv2 block layout)::

    x ──norm1──> attn ──ls1──(+)──norm2──> mlp ──ls2──(+)── ... ──norm──> outputs
    pre_norm1  post_norm1     pre_norm2  post_norm2         pre/post final norm

A specialized norm is reported along both of its paths: ``post`` is what the model computes
(prefix tokens through the prefix parameters, patches through the shared ones), and
``paths.prefix`` / ``paths.patch`` are the similarities when *all* tokens go through one
parameter set. For a shared norm the three agree, so vanilla and specialized reports share
one key set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clsvit_lightning.analysis import statistics as stats
from clsvit_lightning.models import Specialization

SCHEMA_VERSION = 3  # 2: channels_pre (channel magnitudes entering each norm); 3: model.position_encoding, ffn_layer


@dataclass
class TokenAnalysis:
    """The JSON-ready ``report`` and the tensors the plots need.

    ``cls_attention``: [CLS]->patch attention of every block ``[depth, B, heads, h, w]``
    (renormalised over the patches); ``patch_features``: final-norm patch tokens ``[B, h, w, D]``.
    """

    report: dict
    cls_attention: Tensor
    patch_features: Tensor


def _split(prefix: Tensor) -> tuple[Tensor, Tensor]:
    """Prefix group ``[B, 1 + R, D]`` -> (cls ``[B, D]``, registers ``[B, R, D]``)."""
    return prefix[:, 0], prefix[:, 1:]


def _norm_entry(norm: nn.Module, inputs: tuple[Tensor, Tensor], outputs: tuple[Tensor, Tensor], top_k: int) -> dict:
    """Similarities before/after one norm, along each of its paths, and its per-channel magnitudes."""
    prefix, patches = inputs
    post_prefix, post_patches = outputs
    post_cls, post_registers = _split(post_prefix)
    tokens = torch.cat([prefix, patches], dim=1).float()  # [B, 1 + R + N, D]
    num_prefix = prefix.shape[1]
    shared = (norm.weight, norm.bias)
    prefix_params = (norm.prefix_parameter("weight"), norm.prefix_parameter("bias")) if norm_has_paths(norm) else shared
    paths = {}
    for path, (weight, bias) in (("prefix", prefix_params), ("patch", shared)):
        normed = F.layer_norm(tokens, tokens.shape[-1:], _float(weight), _float(bias), norm.eps)
        path_cls, path_registers = _split(normed[:, :num_prefix])
        paths[path] = stats.similarities(path_cls, path_registers, normed[:, num_prefix:])
    return {
        "pre": stats.similarities(*_split(prefix), patches),
        "post": stats.similarities(post_cls, post_registers, post_patches),
        "paths": paths,
        # cos(prefix weight, shared weight): 1 for a shared or freshly warm-started norm.
        "path_weight_cosine": _weight_cosine(prefix_params[0], shared[0]),
        "channels": stats.channel_magnitudes(post_cls, post_patches, top_k),
        # Going into the norm: which channels each token type uses before the norm rescales them
        # (the paper's account is a LayerNorm fitting channels of different magnitude per type).
        "channels_pre": stats.channel_magnitudes(_split(prefix)[0], patches, top_k),
    }


def norm_has_paths(norm: nn.Module) -> bool:
    return hasattr(norm, "prefix_parameter")


def _float(parameter: Tensor | None) -> Tensor | None:
    return None if parameter is None else parameter.float()


def _weight_cosine(first: Tensor | None, second: Tensor | None) -> float:
    if first is None or second is None:
        return 1.0
    return F.cosine_similarity(first.double(), second.double(), dim=0).item()


def _model_entry(model: nn.Module) -> dict:
    spec = getattr(model, "spec", Specialization())
    attention = model.blocks[0].attn
    return {
        "specialization": spec.to_string(depth=len(model.blocks)),
        "patch_size": model.patch_size,
        "embed_dim": model.embed_dim,
        "depth": len(model.blocks),
        "num_heads": attention.num_heads,
        "qkv_bias": attention.qkv.bias is not None,
        "num_registers": model.num_prefix_tokens - 1,
        "num_prefix_tokens": model.num_prefix_tokens,
        "num_prefix_path_tokens": getattr(model, "num_prefix_path_tokens", model.num_prefix_tokens),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "position_encoding": "rope" if getattr(model, "rope_embed", None) is not None else "learned",
        "ffn_layer": getattr(model, "config", {}).get("ffn_layer", "mlp"),
    }


@torch.no_grad()
def analyze_backbone(
    model: nn.Module, images: Tensor, top_channels: int = 8, outlier_ratio: float = 3.0
) -> TokenAnalysis:
    """Measure ``model`` (a :class:`~clsvit_lightning.models.VisionTransformer`) on ``images [B, 3, H, W]``.

    ``top_channels``: how many most type-specific channels to list per norm; ``outlier_ratio``:
    a patch whose norm exceeds this multiple of its image's median patch norm is an outlier.
    The model runs in eval mode (its mode is restored afterwards).
    """
    if images.ndim != 4:
        raise ValueError(f"analyze_backbone: expected images [B, 3, H, W], got shape {tuple(images.shape)}")
    patch_size = model.patch_size
    if images.shape[-2] % patch_size or images.shape[-1] % patch_size:
        raise ValueError(
            f"analyze_backbone: image size {tuple(images.shape[-2:])} is not divisible by the patch size {patch_size}"
        )
    grid = (images.shape[-2] // patch_size, images.shape[-1] // patch_size)
    depth = len(model.blocks)
    blocks: list[dict] = [{"index": index} for index in range(depth)]
    final: dict = {}
    attention_maps: list[Tensor] = [torch.empty(0)] * depth
    features: list[Tensor] = []

    def norm_hook(entry: dict, key: str):
        def hook(module, args, output):
            entry[key] = _norm_entry(module, args, output, top_channels)
            if entry is final:
                features.append(output[1].float().cpu())  # final-norm patch tokens [B, N, D]

        return hook

    def attention_hook(index: int):
        def hook(module, args):
            prefix, patches, *rest = args
            rope = rest[0] if rest else None  # DINOv3: the patches' (sin, cos), the same for every image
            # One image at a time: the full [heads, T, T] matrix of a large input is big, and only
            # the [CLS] row is kept.
            rows = [
                module.attention_probs(prefix[i : i + 1], patches[i : i + 1], rope)[:, :, :1]  # [1, heads, 1, T]
                for i in range(prefix.shape[0])
            ]
            probs = torch.cat(rows)  # [B, heads, 1, T]
            blocks[index]["attention"], maps = stats.attention_statistics(probs, model.num_prefix_tokens)
            attention_maps[index] = maps.cpu()

        return hook

    def block_hook(index: int):
        def hook(module, args, output):
            prefix, patches = output
            blocks[index]["token_norms"] = stats.token_norms(*_split(prefix), patches, outlier_ratio)

        return hook

    handles = [model.norm.register_forward_hook(norm_hook(final, "norm"))]
    for index, block in enumerate(model.blocks):
        handles += [
            block.norm1.register_forward_hook(norm_hook(blocks[index], "norm1")),
            block.attn.register_forward_pre_hook(attention_hook(index)),
            block.norm2.register_forward_hook(norm_hook(blocks[index], "norm2")),
            block.register_forward_hook(block_hook(index)),
        ]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model.forward_features(images.to(device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    batch = images.shape[0]
    report = {
        "schema_version": SCHEMA_VERSION,
        "model": _model_entry(model),
        "input": {
            "num_images": batch,
            "height": images.shape[-2],
            "width": images.shape[-1],
            "grid": list(grid),
            "num_patches": grid[0] * grid[1],
        },
        "settings": {"top_channels": top_channels, "outlier_ratio": outlier_ratio},
        "blocks": blocks,
        "final_norm": final["norm"],
    }
    # [depth, B, heads, N] -> [depth, B, heads, h, w]
    cls_attention = torch.stack(attention_maps).reshape(depth, batch, -1, *grid)
    patch_features = features[0].reshape(batch, *grid, -1)  # [B, N, D] -> [B, h, w, D]
    return TokenAnalysis(report=report, cls_attention=cls_attention, patch_features=patch_features)
