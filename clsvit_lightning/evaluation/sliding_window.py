"""Dense inference on whole images or by sliding window, with flip / multi-scale test-time augmentation.

``predict(images [B, 3, h, w]) -> logits [B, K, h, w]`` is any model that returns per-pixel outputs
at its input size. mmsegmentation's ``slide`` mode (the ADE20K protocol: crop 512, stride 341):
windows of ``crop_size`` start every ``stride`` pixels, the last one of each row/column is pulled
back to end at the image border, and the logits of overlapping windows are averaged:

    logits(p) = sum_{windows w containing p} predict(w)(p) / #{windows containing p}

Test-time augmentation (``aug_test``): for each scale ``s`` (and its horizontal flip), resize the
image by ``s``, infer, resize the logits back, take the softmax; the output is the mean of those
probabilities (so the argmax is the prediction; averaging probabilities, not logits, as mmseg).

Separable fast path. A predictor that upsamples its outputs bilinearly at the end (every dense head
here: :class:`~clsvit_lightning.models.heads.DensePredictor`) can expose
``low_resolution(images) -> (outputs [B, K, h, w], rows [H, h], cols [W, w])`` with
``predict(images) == rows @ outputs @ cols.T`` per channel. The window average above is then

    logits = sum_top R_top @ (sum_left outputs(top, left) @ C_left.T)

where ``R``/``C`` are the windows' ``rows``/``cols`` placed at their offsets and divided by the row
and column coverage (the window grid is a product, so ``count(y, x) = count_rows(y) * count_cols(x)``).
The full-resolution result is written once, by one matrix product per row of windows, in
``[B, H, W, K]`` order (returned as a ``[B, K, H, W]`` view), so the per-pixel argmax reads ``K``
contiguous values. The per-window upsampling, the full-resolution sums and the division by the
counts, which took most of the evaluation time outside the backbone, are gone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Predictor = Callable[[Tensor], Tensor]


@runtime_checkable
class SeparablePredictor(Protocol):
    """A predictor whose outputs are a bilinear resize of low-resolution outputs (see the module docstring)."""

    def __call__(self, images: Tensor) -> Tensor: ...

    def low_resolution(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...


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


@lru_cache(maxsize=64)
def _bilinear_matrix_cpu(out_size: int, in_size: int) -> Tensor:
    scale = in_size / out_size
    source = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
    low = source.floor().long().clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    weight_high = (source - low).clamp(0, 1)
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    matrix.index_put_((rows, low), 1 - weight_high, accumulate=True)
    matrix.index_put_((rows, high), weight_high, accumulate=True)
    return matrix


def bilinear_matrix(out_size: int, in_size: int, device: torch.device | str = "cpu") -> Tensor:
    """``[out_size, in_size]`` float32 ``M``: ``M @ x`` is ``F.interpolate`` (linear, ``align_corners=False``) of ``x``.

    PyTorch's source index, ``max((i + 0.5) * in / out - 0.5, 0)``, and its clamped right neighbour;
    rows sum to 1. Two of them resize an image separably: ``rows @ x @ cols.T`` is the bilinear resize.
    """
    return _bilinear_matrix_cpu(out_size, in_size).to(device=device, dtype=torch.float32)


def _coverage(size: int, starts: Sequence[int], crop: int) -> Tensor:
    """How many windows cover each position of a side: ``[size]`` float."""
    counts = torch.zeros(size, dtype=torch.float32)
    for start in starts:
        counts[start : min(start + crop, size)] += 1
    return counts


def _argmax_last(values: Tensor) -> Tensor:
    """``values.argmax(dim=-1)`` (first index of the maximum, as torch).

    On CPU through numpy: torch's CPU argmax over a short contiguous last dimension (150 classes) is
    not vectorised and took 3x numpy's SIMD argmax on one core (1.5 vs 0.5 ms per 10^6 values).
    """
    if values.device.type != "cpu":
        return values.argmax(dim=-1)
    return torch.from_numpy(np.argmax(values.detach().numpy(), axis=-1))


def _row_chunks(height: int, boundaries: Sequence[int], max_rows: int) -> list[tuple[int, int]]:
    """``[0, height)`` cut at every window boundary, then into pieces of at most ``max_rows`` rows."""
    cuts = sorted({0, height, *(b for b in boundaries if 0 < b < height)})
    chunks = []
    for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
        chunks.extend((y, min(y + max_rows, stop)) for y in range(start, stop, max_rows))
    return chunks


def separable_slide_inference(
    predict: SeparablePredictor,
    images: Tensor,
    crop_size: tuple[int, int],
    stride: tuple[int, int],
    argmax: bool = False,
    chunk_elements: int = 1 << 20,
) -> Tensor:
    """:func:`slide_inference` for a :class:`SeparablePredictor` (same result up to float rounding).

    Returns ``[B, K, H, W]`` float32 as a view of a ``[B, H, W, K]`` tensor, or with ``argmax=True``
    the ``[B, H, W]`` class ids of it, computed a few rows at a time (about ``chunk_elements``
    values each, so they stay in cache) without ever holding the full-resolution logits.
    """
    (crop_h, crop_w), (stride_h, stride_w) = crop_size, stride
    batch, height, width = images.shape[0], *images.shape[-2:]
    tops, lefts = window_starts(height, crop_h, stride_h), window_starts(width, crop_w, stride_w)
    row_weights = 1.0 / _coverage(height, tops, crop_h).to(images.device)  # [H]
    col_weights = 1.0 / _coverage(width, lefts, crop_w).to(images.device)  # [W]
    # The model may run under autocast (Lightning evaluates under it with bf16-mixed); the averages,
    # resizes and the argmax stay in float32.
    fp32 = torch.autocast(images.device.type, enabled=False)
    bands = []  # per row of windows: (top, bottom, rows [h_crop, h], outputs at low resolution [B, h, W * K])
    for top in tops:
        bottom = min(top + crop_h, height)
        band: Tensor | None = None  # [B, h, W, K]
        for left in lefts:
            right = min(left + crop_w, width)
            outputs, rows, cols = predict.low_resolution(images[:, :, top:bottom, left:right])  # [B, K, h, w]
            cols = cols * col_weights[left:right, None]  # [w_crop, w]
            with fp32:
                part = torch.matmul(cols, outputs.float().permute(0, 2, 3, 1))  # [B, h, w_crop, K]
            if band is None:
                band = part.new_zeros(batch, part.shape[1], width, part.shape[-1])
            band[:, :, left:right] += part
        bands.append((top, bottom, rows * row_weights[top:bottom, None], band.flatten(2)))
    channels = bands[0][3].shape[-1] // width
    # Each output row mixes two rows of a band: restrict every product to the band rows it reads.
    max_rows = max(1, chunk_elements // (batch * width * channels))
    chunks = _row_chunks(height, [b for top, bottom, _, _ in bands for b in (top, bottom)], max_rows)
    if argmax:
        out = torch.empty(batch, height, width, dtype=torch.long, device=images.device)
    else:
        out = torch.empty(batch, height, width * channels, device=images.device)
    for start, stop in chunks:
        values: Tensor | None = None  # [B, rows, W * K]
        for top, bottom, rows, band in bands:
            if not top <= start < bottom:
                continue
            weights = rows[start - top : stop - top]  # [rows, h]
            used = weights.abs().sum(dim=0).nonzero().squeeze(1)
            first, last = int(used[0]), int(used[-1]) + 1
            with fp32:
                term = torch.matmul(weights[:, first:last], band[:, first:last])
            values = term if values is None else values + term
        if argmax:
            out[:, start:stop] = _argmax_last(values.view(batch, stop - start, width, channels))
        else:
            out[:, start:stop] = values
    return out if argmax else out.view(batch, height, width, channels).permute(0, 3, 1, 2)


def slide_inference(
    predict: Predictor, images: Tensor, crop_size: int | tuple[int, int], stride: int | tuple[int, int]
) -> Tensor:
    """Average of ``predict`` over overlapping windows: ``[B, 3, H, W] -> [B, K, H, W]``.

    A side smaller than the crop gets one window of the image's size on that side. A
    :class:`SeparablePredictor` takes :func:`separable_slide_inference`.
    """
    crop_h, crop_w = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
    stride_h, stride_w = (stride, stride) if isinstance(stride, int) else stride
    if isinstance(predict, SeparablePredictor):
        return separable_slide_inference(predict, images, (crop_h, crop_w), (stride_h, stride_w))
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
    argmax: bool = False,
) -> Tensor:
    """One pass, whole image or sliding window: ``[B, 3, H, W] -> logits [B, K, H, W]`` (or ids ``[B, H, W]``)."""
    if mode not in ("whole", "slide"):
        raise ValueError(f"inference mode {mode!r}; expected 'whole' or 'slide'")
    if isinstance(predict, SeparablePredictor):
        windows = (images.shape[-2:], images.shape[-2:]) if mode == "whole" else (crop_size, stride)
        crop, step = (tuple(v) if not isinstance(v, int) else (v, v) for v in windows)
        return separable_slide_inference(predict, images, crop, step, argmax)
    out = predict(images) if mode == "whole" else slide_inference(predict, images, crop_size, stride)
    return out.argmax(dim=1) if argmax else out


def tta_inference(
    predict: Predictor,
    images: Tensor,
    mode: Literal["whole", "slide"] = "whole",
    crop_size: int | tuple[int, int] = 512,
    stride: int | tuple[int, int] = 341,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    output: Literal["probabilities", "values", "labels"] = "probabilities",
    short_side: int | None = None,
) -> Tensor:
    """Mean over scales (and flips) of the softmax of :func:`infer`: ``[B, 3, H, W] -> [B, K, H, W]``.

    ``short_side``: scale ``s`` resizes the image to a short side of ``short_side * s`` (mmseg's
    ``img_scale=(∞, short_side)`` with ``img_ratios``), otherwise to ``s`` times its size; outputs
    always come back at the input size. ``output="values"`` averages the raw outputs instead of
    probabilities (regression; or a single view, whose argmax is the same). ``output="labels"``:
    the argmax ``[B, H, W]`` of the probabilities (of the values for a single view, the same ids).
    """
    if not scales:
        raise ValueError("test-time augmentation: scales is empty; use [1.0] for a single pass")
    height, width = images.shape[-2:]
    base = short_side / min(height, width) if short_side else 1.0

    def view_size(scale: float) -> tuple[int, int]:
        return max(1, int(height * base * scale + 0.5)), max(1, int(width * base * scale + 0.5))  # mmseg rounding

    if output == "labels":
        single_view = len(scales) == 1 and not flip
        if single_view and view_size(scales[0]) == (height, width):
            return infer(predict, images, mode, crop_size, stride, argmax=True)
        values = "values" if single_view else "probabilities"  # softmax is monotone: one view needs none
        return tta_inference(predict, images, mode, crop_size, stride, scales, flip, values, short_side).argmax(1)
    total: Tensor | None = None
    for scale in scales:
        scaled = images
        size = view_size(scale)
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
