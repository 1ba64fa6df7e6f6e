"""A data order that depends only on (seed, epoch): resume is exact at epoch boundaries.

A plain ``RandomSampler`` draws from the global torch RNG when an epoch's iterator starts, and
Lightning creates that iterator at different moments in a fresh run and in a resumed one (before
or after ``set_epoch``), so the draws do not line up. Here the permutation comes from a generator
seeded from ``(seed, epoch)`` at the moment the order is drawn. The DataLoader's own generator (the
worker base seed, hence the augmentations of workers) is reseeded in ``set_epoch`` too; when
Lightning creates the iterator before ``set_epoch`` it is drawn from the previous epoch's seed,
so with ``num_workers > 0`` the augmentations right after a resume may differ from the
uninterrupted run while the order of the samples does not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochSeededSampler(Sampler[int]):
    """Random (or sequential) order drawn from ``(seed, epoch)``; ``generator`` is for the DataLoader."""

    def __init__(self, data_source: Sized, seed: int = 0, shuffle: bool = True) -> None:
        self.length = len(data_source)
        self.seed, self.shuffle = seed, shuffle
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator.manual_seed(self._epoch_seed())

    def _epoch_seed(self) -> int:
        return self.seed * 1_000_003 + self.epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.length))
        order = torch.Generator().manual_seed(self._epoch_seed())
        return iter(torch.randperm(self.length, generator=order).tolist())

    def __len__(self) -> int:
        return self.length


def seeded_dataloader(dataset: Dataset, seed: int = 0, shuffle: bool = True, **kwargs: Any) -> DataLoader:
    """A DataLoader whose order and worker seeds are functions of ``(seed, epoch)``."""
    from clsvit_lightning.data.seeding import worker_init_fn  # noqa: PLC0415 (data imports this module)

    sampler = EpochSeededSampler(dataset, seed=seed, shuffle=shuffle)
    kwargs.setdefault("worker_init_fn", worker_init_fn)  # reseeds albumentations in each worker
    return DataLoader(dataset, sampler=sampler, generator=sampler.generator, **kwargs)
