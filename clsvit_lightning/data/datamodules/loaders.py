"""The DataLoader settings every DataModule shares (workers, pinned memory, augmentation seeding)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import cv2
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from clsvit_lightning.data.seeding import EpochSeededSampler, worker_init_fn


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
    epoch: int = 0,
) -> DataLoader:
    """A DataLoader whose workers reseed the albumentations pipelines (``data/seeding.py``).

    Shuffling uses an order drawn from ``(seed, epoch)`` (``data/seeding.py``), so a run resumed
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
        # The epoch the loader starts in. Lightning sets it only after creating the first iterator,
        # too late when a resumed run starts in a later epoch (workers prefetch at creation).
        sampler.set_epoch(epoch)
    # torchdata's StatefulDataLoader: Lightning saves its position in every checkpoint and resumes
    # there, mid-epoch included (a plain DataLoader restarts the epoch).
    return StatefulDataLoader(
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


def trainer_epoch(datamodule: object) -> int:
    """The epoch the datamodule's trainer trains next (0 without a trainer); see :func:`resume_train_loader`."""
    trainer = getattr(datamodule, "trainer", None)
    return 0 if trainer is None else int(trainer.fit_loop.epoch_progress.current.processed)


def resume_train_loader(trainer: Any) -> None:
    """After a checkpoint restore, put the train loader where the interrupted run left it.

    Tasks count their optimizer steps (``trainer.estimated_stepping_batches``) in ``setup``, which
    makes Lightning build the train loader and its first iterator before the checkpoint's loop
    state is restored; Lightning then neither loads the saved loader position nor builds a new
    iterator. Here, once the restore is done and Lightning has settled which epoch it continues
    (``on_train_start``, after the fit loop's reset): the saved positions are loaded
    (``StatefulDataLoader``), each :class:`EpochSeededSampler` is set to the epoch the trainer
    trains next (Lightning sets it only after the first iterator exists), and the iterator is
    rebuilt. Lightning's own loop methods do the loading; only the moment is ours.
    """
    loop = trainer.fit_loop
    loader = loop._combined_loader
    if loader is None:
        return
    # Resumed into the middle of an epoch: `restarting`; at an epoch end saved without a validation
    # loop, Lightning resumes with `restarting` False, and only the sampler's epoch may be stale.
    pending = bool(loop.restarting and loop._combined_loader_states_to_load)
    if pending:
        loop._load_combined_loader_states()
    epoch = int(loop.epoch_progress.current.processed)
    stale = False
    for dataloader in loader.flattened:
        sampler = getattr(dataloader, "sampler", None)
        # Under DDP Lightning wraps the sampler (DistributedSamplerWrapper), whose set_epoch forwards.
        inner = getattr(getattr(sampler, "dataset", None), "_sampler", sampler)
        if isinstance(inner, EpochSeededSampler) and inner.epoch != epoch:
            sampler.set_epoch(epoch)  # type: ignore[union-attr]
            stale = True
    if (pending or stale) and loop._data_fetcher is not None:
        iter(loop._data_fetcher)  # a new iterator from the loaded position and the right epoch
