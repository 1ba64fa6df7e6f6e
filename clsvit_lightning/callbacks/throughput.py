"""Lightning's ThroughputMonitor, counting source images of this project's batches.

``ThroughputMonitor`` needs a ``batch_size_fn``; a YAML config cannot hold a lambda, so this
subclass fixes it: a multi-crop batch counts its images (``global_crops [G, B, ...]`` -> B), a
labelled or dense batch its ``image`` rows. FLOP/s and MFU come from the module's
``flops_per_batch`` attribute when it sets one.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ThroughputMonitor


def images_in_batch(batch: Any) -> int:
    if isinstance(batch, dict):
        if "global_crops" in batch:
            return int(batch["global_crops"].shape[1])  # [G, B, 3, H, W]
        if "image" in batch:
            return int(batch["image"].shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        return int(batch[0].shape[0])
    raise ValueError(f"cannot count the images of a batch of type {type(batch).__name__}")


class ImageThroughputMonitor(ThroughputMonitor):
    def __init__(self, window_size: int = 20, separator: str = "/") -> None:
        super().__init__(batch_size_fn=images_in_batch, window_size=window_size, separator=separator)
