"""The DataLoader settings every DataModule shares (workers, pinned memory, augmentation seeding)."""

from __future__ import annotations

from collections.abc import Callable

import cv2
from torch.utils.data import DataLoader, Dataset

from clsvit_lightning.data.seeding import worker_init_fn


def make_loader(
    dataset: Dataset,
    batch_size: int,
    collate_fn: Callable,
    shuffle: bool,
    num_workers: int,
    pin_memory: bool,
    persistent_workers: bool,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader whose workers reseed the albumentations pipelines (``data/seeding.py``).

    Distributed sampling is left to Lightning, which swaps in a ``DistributedSampler`` under DDP.
    """
    if num_workers > 0:
        # Workers are the parallelism: OpenCV's own thread pool in each would oversubscribe the cores.
        # Set in the main process, before the fork (calling it inside a forked worker can deadlock).
        cv2.setNumThreads(1)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        # persistent_workers is only allowed with workers.
        persistent_workers=persistent_workers and num_workers > 0,
        drop_last=drop_last,
        worker_init_fn=worker_init_fn,
    )
