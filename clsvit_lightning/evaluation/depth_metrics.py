"""Monocular depth metrics (Eigen et al. 2014; the NYUv2 protocol of the depth toolboxes DINOv2 uses).

Over the valid pixels ``p`` of an image (ground truth ``g > 0`` measured, inside the Eigen crop for
NYUv2: the DataModule folds both into ``valid``), with prediction ``d > 0``:

* ``AbsRel = mean |d - g| / g``,  ``SqRel = mean (d - g)^2 / g``,
* ``RMSE = sqrt(mean (d - g)^2)``,  ``RMSE_log = sqrt(mean (log d - log g)^2)``,
* ``log10 = mean |log10 d - log10 g|``,
* ``delta_k = mean [max(d / g, g / d) < 1.25^k]`` for ``k = 1, 2, 3``.

``average="image"`` (default, the toolbox protocol) computes them per image and averages over
images with at least one valid pixel; ``average="pixel"`` pools every valid pixel of the dataset.
Both are kept as running sums, so the result is exact over the dataset and DDP sync is a sum.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric

DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3")
# Per-pixel terms whose mean gives each metric (RMSE-type metrics take a square root afterwards).
_PIXEL_TERMS = ("abs_rel", "sq_rel", "squared_error", "squared_log_error", "log10", "delta1", "delta2", "delta3")


def _pixel_terms(preds: Tensor, target: Tensor) -> dict[str, Tensor]:
    """The per-pixel quantities ``[P]`` averaged by every metric (valid pixels only)."""
    ratio = torch.maximum(preds / target, target / preds)
    log_diff = preds.log() - target.log()
    return {
        "abs_rel": (preds - target).abs() / target,
        "sq_rel": (preds - target) ** 2 / target,
        "squared_error": (preds - target) ** 2,
        "squared_log_error": log_diff**2,
        "log10": (preds.log10() - target.log10()).abs(),
        "delta1": (ratio < 1.25).double(),
        "delta2": (ratio < 1.25**2).double(),
        "delta3": (ratio < 1.25**3).double(),
    }


def _metrics_from_means(means: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {name: means[name] for name in ("abs_rel", "sq_rel", "log10", "delta1", "delta2", "delta3")}
    out["rmse"] = means["squared_error"].sqrt()
    out["rmse_log"] = means["squared_log_error"].sqrt()
    return {name: out[name] for name in DEPTH_METRICS}


class DepthMetrics(Metric):
    """``update(preds [B, H, W], target [B, H, W], valid [B, H, W] bool)``; ``compute()`` -> dict of scalars."""

    full_state_update = False
    higher_is_better = None

    def __init__(self, average: Literal["image", "pixel"] = "image", **kwargs) -> None:
        super().__init__(**kwargs)
        if average not in ("image", "pixel"):
            raise ValueError(f"DepthMetrics: average must be 'image' or 'pixel', got {average!r}")
        self.average = average
        for term in _PIXEL_TERMS:  # sums over all valid pixels of the dataset
            self.add_state(f"pixel_sum_{term}", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        for name in DEPTH_METRICS:  # sums over images of each image's metric
            self.add_state(f"image_sum_{name}", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_pixels", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, valid: Tensor) -> None:
        if preds.shape != target.shape or valid.shape != target.shape or preds.ndim != 3:
            raise ValueError(
                f"DepthMetrics: preds {tuple(preds.shape)}, target {tuple(target.shape)} and valid "
                f"{tuple(valid.shape)} must have the same shape [B, H, W]"
            )
        valid = valid.bool() & (target > 0)
        preds, target = preds.double(), target.double()
        if (preds[valid] <= 0).any():
            raise ValueError("DepthMetrics: predictions must be > 0 on valid pixels (clamp to [min_depth, max_depth])")
        for image_preds, image_target, image_valid in zip(preds, target, valid, strict=True):
            count = image_valid.sum()
            if count == 0:
                continue  # an image without a valid pixel has no score (the toolbox skips it)
            sums = {
                name: values.sum()
                for name, values in _pixel_terms(image_preds[image_valid], image_target[image_valid]).items()
            }
            for name, total in sums.items():
                setattr(self, f"pixel_sum_{name}", getattr(self, f"pixel_sum_{name}") + total)
            for name, value in _metrics_from_means({name: total / count for name, total in sums.items()}).items():
                setattr(self, f"image_sum_{name}", getattr(self, f"image_sum_{name}") + value)
            self.num_pixels += count
            self.num_images += 1

    def compute(self) -> dict[str, Tensor]:
        if self.average == "image":
            count = self.num_images.clamp(min=1)  # no valid pixel at all: zeros rather than NaN
            return {name: getattr(self, f"image_sum_{name}") / count for name in DEPTH_METRICS}
        count = self.num_pixels.clamp(min=1)
        return _metrics_from_means({name: getattr(self, f"pixel_sum_{name}") / count for name in _PIXEL_TERMS})
