"""The DataLoader settings every DataModule shares (workers, pinned memory, augmentation seeding)."""

from __future__ import annotations

import os
from collections.abc import Callable

import cv2
from torch.utils.data import DataLoader, Dataset

from clsvit_lightning.data.seeding import worker_init_fn
from clsvit_lightning.training.seeding import EpochSeededSampler


def check_batch_fits(dataset: Dataset, batch_size: int, what: str = "dataset") -> None:
    """Raise if ``drop_last`` batches of ``batch_size`` would drop every sample of ``dataset`` (an epoch of nothing)."""
    size = len(dataset)  # type: ignore[arg-type]
    if size < batch_size:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {size} samples of the {what}: the training loader drops "
            f"the last incomplete batch, so an epoch would train on nothing; set batch_size <= {size} or add data"
        )


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

    Shuffling uses an order drawn from ``(seed, epoch)`` (``training/seeding.py``), so a run resumed
    from a checkpoint sees the batches of the uninterrupted run; the seed is the one given to
    ``seed_everything``. Distributed sampling is left to Lightning, which swaps in a
    ``DistributedSampler`` (also seeded by epoch) under DDP. With ``drop_last`` a dataset smaller than
    one batch is an error (:func:`check_batch_fits`), not an epoch without a step.
    """
    if drop_last:
        check_batch_fits(dataset, batch_size, getattr(dataset, "description", type(dataset).__name__))
    if num_workers > 0:
        # Workers are the parallelism: OpenCV's own thread pool in each would oversubscribe the cores.
        # Set in the main process, before the fork (calling it inside a forked worker can deadlock).
        cv2.setNumThreads(1)
    sampler = None
    if shuffle:
        sampler = EpochSeededSampler(dataset, seed=int(os.environ.get("PL_GLOBAL_SEED", 0)))  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        generator=sampler.generator if sampler is not None else None,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        # persistent_workers is only allowed with workers.
        persistent_workers=persistent_workers and num_workers > 0,
        drop_last=drop_last,
        worker_init_fn=worker_init_fn,
    )
