"""Dense inference on whole images or by sliding window, with flip / multi-scale test-time augmentation.

``predict(images [B, 3, h, w]) -> logits [B, K, h, w]`` is any model that returns per-pixel outputs
at its input size. mmsegmentation's ``slide`` mode (the ADE20K protocol: crop 512, stride 341):
windows of ``crop_size`` start every ``stride`` pixels, the last one of each row/column is pulled
back to end at the image border, and the logits of overlapping windows are averaged:

    logits(p) = sum_{windows w containing p} predict(w)(p) / #{windows containing p}

Test-time augmentation (``aug_test``): for each scale ``s`` (and its horizontal flip), resize the
image by ``s``, infer, resize the logits back, take the softmax; the output is the mean of those
probabilities (so the argmax is the prediction; averaging probabilities, not logits, as mmseg).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

Predictor = Callable[[Tensor], Tensor]


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets covering ``[0, size)`` with windows of ``crop`` every ``stride`` (mmseg's grid)."""
    if crop <= 0 or stride <= 0:
        raise ValueError(f"sliding window: crop_size and stride must be > 0, got {crop} and {stride}")
    if stride > crop:
        raise ValueError(f"sliding window: stride {stride} > crop_size {crop} would leave pixels uncovered")
    if size <= crop:
        return [0]
    count = (size - crop + stride - 1) // stride + 1
    return [min(index * stride, size - crop) for index in range(count)]


def slide_inference(
    predict: Predictor, images: Tensor, crop_size: int | tuple[int, int], stride: int | tuple[int, int]
) -> Tensor:
    """Average of ``predict`` over overlapping windows: ``[B, 3, H, W] -> [B, K, H, W]``.

    A side smaller than the crop gets one window of the image's size on that side.
    """
    crop_h, crop_w = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
    stride_h, stride_w = (stride, stride) if isinstance(stride, int) else stride
    height, width = images.shape[-2:]
    logits_sum: Tensor | None = None
    counts = images.new_zeros(1, 1, height, width)
    for top in window_starts(height, crop_h, stride_h):
        for left in window_starts(width, crop_w, stride_w):
            bottom, right = min(top + crop_h, height), min(left + crop_w, width)
            window_logits = predict(images[:, :, top:bottom, left:right])  # [B, K, h, w]
            if logits_sum is None:
                logits_sum = window_logits.new_zeros(images.shape[0], window_logits.shape[1], height, width)
            logits_sum[:, :, top:bottom, left:right] += window_logits
            counts[:, :, top:bottom, left:right] += 1
    return logits_sum / counts


def infer(
    predict: Predictor,
    images: Tensor,
    mode: Literal["whole", "slide"] = "whole",
    crop_size: int | tuple[int, int] = 512,
    stride: int | tuple[int, int] = 341,
) -> Tensor:
    """One pass, whole image or sliding window: ``[B, 3, H, W] -> logits [B, K, H, W]``."""
    if mode == "whole":
        return predict(images)
    if mode == "slide":
        return slide_inference(predict, images, crop_size, stride)
    raise ValueError(f"inference mode {mode!r}; expected 'whole' or 'slide'")


def tta_inference(
    predict: Predictor,
    images: Tensor,
    mode: Literal["whole", "slide"] = "whole",
    crop_size: int | tuple[int, int] = 512,
    stride: int | tuple[int, int] = 341,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    output: Literal["probabilities", "values"] = "probabilities",
    short_side: int | None = None,
) -> Tensor:
    """Mean over scales (and flips) of the softmax of :func:`infer`: ``[B, 3, H, W] -> [B, K, H, W]``.

    ``short_side``: scale ``s`` resizes the image to a short side of ``short_side * s`` (mmseg's
    ``img_scale=(∞, short_side)`` with ``img_ratios``), otherwise to ``s`` times its size; outputs
    always come back at the input size. ``output="values"`` averages the raw outputs instead of
    probabilities (regression; or a single view, whose argmax is the same).
    """
    if not scales:
        raise ValueError("test-time augmentation: scales is empty; use [1.0] for a single pass")
    height, width = images.shape[-2:]
    base = short_side / min(height, width) if short_side else 1.0
    total: Tensor | None = None
    for scale in scales:
        scaled = images
        size = (max(1, int(height * base * scale + 0.5)), max(1, int(width * base * scale + 0.5)))  # mmseg rounding
        if size != (height, width):
            scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            view = scaled.flip(-1) if flipped else scaled
            out = infer(predict, view, mode, crop_size, stride)  # [B, K, h', w']
            if flipped:
                out = out.flip(-1)
            if out.shape[-2:] != (height, width):
                out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False)
            if output == "probabilities":
                out = out.softmax(dim=1)
            total = out if total is None else total + out
    return total / (len(scales) * (2 if flip else 1))
