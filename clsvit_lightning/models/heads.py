"""Dense heads on ViT patch features: DINOv2's linear segmentation and depth probes.

* :class:`DenseFeatures`: the backbone's patch tokens of chosen blocks as maps ``[B, C, h, w]``
  (optionally with the [CLS] token broadcast beside each), frozen or trainable.
* :class:`BNConvHead`: ``BatchNorm2d + Conv1x1`` (``BNHead`` in
  ``dinov2/eval/segmentation/models/decode_heads/linear_head.py``).
* :class:`DepthBinsHead`: ×4 bilinear upsampling, ``Conv1x1`` to ``num_bins`` scores, depth as the
  bin-weighted mean (DINOv2's linear depther, ``dinov2/eval/depth/``), or direct regression.
* :class:`DensePredictor`: pads the image to a multiple of the patch size, runs features + head,
  resizes the outputs bilinearly to the padded size and removes the padding, so outputs are
  registered pixel for pixel with the input (DINOv2 squeezes the padded map onto the image instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clsvit_lightning.evaluation.sliding_window import bilinear_matrix
from clsvit_lightning.models.vision_transformer import VisionTransformer


def last_blocks(depth: int, count: int) -> list[int]:
    """Indices of the last ``count`` blocks (the segmentation "+ms" probe: 4)."""
    if not 1 <= count <= depth:
        raise ValueError(f"cannot take the last {count} blocks of a {depth}-block backbone")
    return list(range(depth - count, depth))


# DINOv2's 4-layer depth probe lists its blocks per depth (dinov2/hub/depthers.py); ViT-L's first
# one (4) is not what even spacing gives (5).
DINOV2_DEPTH_BLOCKS = {12: [2, 5, 8, 11], 24: [4, 11, 17, 23], 40: [9, 19, 29, 39]}


def depth_probe_blocks(depth: int, count: int = 4) -> list[int]:
    """``count`` blocks ending with the last one for the multilayer depth probe.

    For 4 blocks of ViT-S/B/L/g (depth 12, 24, 40), DINOv2's lists (ViT-L's is not evenly spaced);
    otherwise evenly spaced: depth 8 -> ``[1, 3, 5, 7]``.
    """
    if not 1 <= count <= depth:
        raise ValueError(f"cannot take {count} blocks of a {depth}-block backbone")
    if count == 4 and depth in DINOV2_DEPTH_BLOCKS:
        return list(DINOV2_DEPTH_BLOCKS[depth])
    return [depth * (k + 1) // count - 1 for k in range(count)]


def center_pad(images: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Zero-pad ``[B, C, H, W]`` to sides divisible by ``multiple``, centred (DINOv2's ``CenterPadding``).

    Returns the padded images and ``(top, bottom, left, right)``.
    """
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    top, left = pad_h // 2, pad_w // 2
    padding = (top, pad_h - top, left, pad_w - left)
    if pad_h == 0 and pad_w == 0:
        return images, padding
    return F.pad(images, (left, pad_w - left, top, pad_h - top)), padding


class DenseFeatures(nn.Module):
    """Patch-token maps of the given blocks, concatenated on channels: ``[B, 3, H, W] -> [B, C, H/p, W/p]``.

    ``C = len(blocks) * D * (2 if concat_cls else 1)``. ``norm`` applies the backbone's final norm
    to each block's output (segmentation) or not (depth). A ``frozen`` backbone gets no gradient,
    runs under ``no_grad`` and stays in eval mode (no drop path) even after ``.train()``.
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        blocks: Sequence[int],
        concat_cls: bool = False,
        norm: bool = True,
        frozen: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.blocks = sorted(blocks)
        backbone_depth = len(backbone.blocks)
        if not self.blocks or self.blocks[0] < 0 or self.blocks[-1] >= backbone_depth:
            raise ValueError(f"feature blocks {list(blocks)} not in 0..{backbone_depth - 1}")
        self.concat_cls, self.norm, self.frozen = concat_cls, norm, frozen
        self.patch_size = backbone.patch_size
        self.out_channels = len(self.blocks) * backbone.embed_dim * (2 if concat_cls else 1)
        if frozen:
            backbone.requires_grad_(False)
            backbone.eval()

    def train(self, mode: bool = True) -> DenseFeatures:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # a frozen probe evaluates the backbone as pretrained: no drop path
        return self

    def forward(self, images: Tensor) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            layers = self.backbone.get_intermediate_layers(
                images, n=self.blocks, reshape=True, return_class_token=True, norm=self.norm
            )
        maps = []
        for patches, cls in layers:  # [B, D, h, w], [B, D]
            maps.append(patches)
            if self.concat_cls:
                maps.append(cls[:, :, None, None].expand_as(patches))
        return torch.cat(maps, dim=1)  # [B, C, h, w]


class BNConvHead(nn.Module):
    """``BatchNorm2d(C)`` then a 1x1 ``Conv2d(C, K)`` initialised ``N(0, 0.01)`` with zero bias (mmseg ``BNHead``)."""

    def __init__(self, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        # Converted to SyncBatchNorm by the Trainer flag `sync_batchnorm: true` under DDP (configs set it).
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, num_outputs, kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.conv(self.bn(features))  # [B, K, h, w]


class DepthBinsHead(nn.Module):
    """Depth from patch features (DINOv2 linear depther, ``BNHead(classify=True)``; its BN is disabled there too).

    Features are upsampled ×``upsample`` (bilinear), a 1x1 conv gives ``num_bins`` scores ``s_k``;
    with ``output="bins"`` the depth is ``sum_k w_k b_k``, ``w_k = (relu(s_k) + 0.1) / sum_j (relu(s_j) + 0.1)``
    ("linear" normalisation) over uniform bin centres ``b_k = linspace(min_depth, max_depth, num_bins)``;
    with ``output="regression"`` one channel gives ``relu(s) + min_depth``.
    """

    def __init__(
        self,
        in_channels: int,
        output: Literal["bins", "regression"] = "bins",
        num_bins: int = 256,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        upsample: int = 4,
    ) -> None:
        super().__init__()
        if output not in ("bins", "regression"):
            raise ValueError(f"depth head output must be 'bins' or 'regression', got {output!r}")
        if not 0 < min_depth < max_depth:
            raise ValueError(f"depth range must satisfy 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        self.output, self.upsample = output, upsample
        self.min_depth, self.max_depth = min_depth, max_depth
        self.conv = nn.Conv2d(in_channels, num_bins if output == "bins" else 1, kernel_size=1)
        self.register_buffer("bin_centres", torch.linspace(min_depth, max_depth, num_bins), persistent=False)

    def forward(self, features: Tensor) -> Tensor:
        if self.upsample > 1:
            features = F.interpolate(features, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        scores = self.conv(features)  # [B, num_bins or 1, h', w']
        if self.output == "regression":
            return F.relu(scores) + self.min_depth  # [B, 1, h', w']
        weights = F.relu(scores) + 0.1  # DINOv2's eps keeps every bin reachable
        weights = weights / weights.sum(dim=1, keepdim=True)
        return torch.einsum("bkhw,k->bhw", weights, self.bin_centres.to(weights.dtype)).unsqueeze(1)  # [B, 1, h', w']


class DensePredictor(nn.Module):
    """Features + head with padding handled: ``[B, 3, H, W] -> [B, K, H, W]`` for any ``H, W``.

    :meth:`low_resolution` gives the same outputs before the final bilinear resize, with that resize
    as two matrices, for :func:`~clsvit_lightning.evaluation.sliding_window.separable_slide_inference`.
    """

    def __init__(self, features: DenseFeatures, head: nn.Module) -> None:
        super().__init__()
        self.features, self.head = features, head

    def forward(self, images: Tensor) -> Tensor:
        outputs, padded_size, (top, left) = self._padded_outputs(images)
        outputs = F.interpolate(outputs, size=padded_size, mode="bilinear", align_corners=False)
        return outputs[:, :, top : top + images.shape[-2], left : left + images.shape[-1]]  # [B, K, H, W]

    def low_resolution(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(outputs [B, K, h, w], rows [H, h], cols [W, w])`` with ``forward(images) == rows @ outputs @ cols.T``."""
        outputs, (padded_h, padded_w), (top, left) = self._padded_outputs(images)
        rows = bilinear_matrix(padded_h, outputs.shape[-2], outputs.device)[top : top + images.shape[-2]]
        cols = bilinear_matrix(padded_w, outputs.shape[-1], outputs.device)[left : left + images.shape[-1]]
        return outputs, rows, cols

    def _padded_outputs(self, images: Tensor) -> tuple[Tensor, tuple[int, int], tuple[int, int]]:
        """(head outputs ``[B, K, h, w]`` of the padded image, its size, the padding's (top, left))."""
        padded, (top, _, left, _) = center_pad(images, self.features.patch_size)
        features = self.features(padded)
        # The head in fp32 whatever the trainer's precision: as in DINOv2, autocast covers the
        # backbone only (bf16 depths are quantised to ~3 cm at 5 m; bf16 logits to 3 significant digits).
        with torch.autocast(padded.device.type, enabled=False):
            outputs = self.head(features.float())
        return outputs, tuple(padded.shape[-2:]), (top, left)
