"""Where the data's randomness comes from: the sample order, and each sample's augmentations.

**Keyed on the sample.** A training sampler (:class:`EpochSeededSampler`) yields each index as a
:class:`SampleIndex` that carries ``(seed, epoch)``; the datasets reseed their augmentations from
``(seed, epoch, index)`` before drawing a sample (:func:`seed_sample`), and the multi-crop collate
draws the batch's iBOT masks from the keys of its samples. So the data a run sees does not depend
on how many loader workers there are, nor on where a run was interrupted and resumed; the order is
a function of ``(seed, epoch)`` and the loader's position is kept in the checkpoint
(``torchdata``'s ``StatefulDataLoader``, which Lightning saves and restores).

**Fallback for plain indices** (evaluation loaders, user samplers):

An ``A.Compose`` owns its random generators (``random_generator``, ``py_random``). The DataLoader
copies the dataset, generators included, into each worker, so every worker replays the same
stream, and without persistent workers every epoch replays it again (AlbumentationsX#266, fixed
only in the AGPL successor). :func:`worker_init_fn` reseeds every ``Compose``
reachable from the worker's dataset from ``torch.initial_seed()`` (which torch makes distinct per
worker and per epoch and derives from the DataLoader's generator, so ``seed_everything`` still
makes runs repeatable) mixed with the global rank, each ``Compose`` with its own seed.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sized
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Sampler

MAX_WALKED_SEQUENCE = 256  # longer lists and tuples are sample lists, not pipelines


def find_composes(root: object, max_depth: int = 6) -> list[A.BaseCompose]:
    """Every ``A.BaseCompose`` reachable from ``root`` through attributes, lists, tuples and dict values.

    Nested composes are reseeded by their parent's ``set_random_seed``, so the walk stops at a compose.
    Sequences longer than ``MAX_WALKED_SEQUENCE`` are not walked: they are sample lists (ImageNet's
    1.28 M entries took 3.8 s per worker start), not the few transforms of a pipeline.
    """
    found: list[A.BaseCompose] = []
    seen: set[int] = set()

    def visit(obj: object, depth: int) -> None:
        if depth > max_depth or id(obj) in seen or isinstance(obj, (str, bytes, int, float, np.ndarray, torch.Tensor)):
            return
        seen.add(id(obj))
        if isinstance(obj, A.BaseCompose):
            found.append(obj)
            return
        if isinstance(obj, dict):
            children = list(obj.values())
        elif isinstance(obj, (list, tuple)):
            if len(obj) > MAX_WALKED_SEQUENCE:
                return
            children = list(obj)
        elif hasattr(obj, "__dict__"):
            children = list(vars(obj).values())
        else:
            return
        for child in children:
            visit(child, depth + 1)

    visit(root, 0)
    return found


def global_rank() -> int:
    """The process's global rank (0 when not distributed).

    torchrun exports ``RANK``, SLURM ``SLURM_PROCID``. Lightning's own launcher exports only
    ``NODE_RANK`` and ``LOCAL_RANK``, so two nodes would share seeds: there the strategy's global
    rank is read from ``rank_zero_only.rank``, which forked DataLoader workers inherit.
    """
    for variable in ("RANK", "SLURM_PROCID"):
        if variable in os.environ:
            return int(os.environ[variable])
    from lightning.fabric.utilities.rank_zero import rank_zero_only  # noqa: PLC0415 (lightning is heavy)

    return int(rank_zero_only.rank)  # set at import from the environment, then by the strategy


def reseed_augmentations(dataset: object, seed: int) -> int:
    """Give every ``Compose`` of ``dataset`` its own seed derived from ``seed``; return how many were reseeded."""
    composes = find_composes(dataset)
    seeds = np.random.SeedSequence(seed).generate_state(max(1, len(composes)), dtype=np.uint64)
    for compose, compose_seed in zip(composes, seeds, strict=False):
        # Compose.set_random_seed takes an int < 2**32 through numpy and random.Random.
        compose.set_random_seed(int(compose_seed % (2**32)))
    return len(composes)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: reseed the worker's augmentations; chain Lightning's worker seeding.

    Lightning installs its own ``pl_worker_init_function`` only when the loader has none, so when
    ``seed_everything(workers=True)`` is active (``PL_SEED_WORKERS=1``) it is called here.
    """
    # No cv2.setNumThreads here: in a forked worker it deadlocks once the parent has used OpenCV's
    # pthreads pool (reproduced with warpAffine); make_loader sets it in the main process instead.
    info = torch.utils.data.get_worker_info()
    # initial_seed() = loader base seed (new each epoch) + worker_id; the rank separates DDP processes.
    # Read it before Lightning's function reseeds torch.
    seed = int(np.random.SeedSequence([torch.initial_seed() % 2**63, global_rank()]).generate_state(1)[0])
    if os.environ.get("PL_SEED_WORKERS") == "1":
        from lightning.fabric.utilities.seed import pl_worker_init_function  # noqa: PLC0415

        pl_worker_init_function(worker_id, rank=global_rank())
    if info is not None:
        reseed_augmentations(info.dataset, seed)


class SampleIndex(int):
    """A dataset index that also carries the ``(seed, epoch)`` its random draws are keyed on.

    An ``int`` (datasets index their sample lists with it unchanged) that survives pickling into
    loader workers and Lightning's ``DistributedSamplerWrapper``, which re-yields what it wraps.
    """

    seed: int
    epoch: int

    def __new__(cls, index: int, seed: int, epoch: int) -> SampleIndex:
        obj = super().__new__(cls, index)
        obj.seed, obj.epoch = seed, epoch
        return obj

    def __reduce__(self) -> tuple:
        return SampleIndex, (int(self), self.seed, self.epoch)

    @property
    def key(self) -> tuple[int, int, int]:
        return self.seed, self.epoch, int(self)


def seed_sample(dataset: object, index: int) -> None:
    """Before drawing sample ``index``: reseed ``dataset``'s augmentations from its key, if it has one.

    Per sample, so it must be cheap: ``Compose.set_random_seed`` builds two new generators for every
    transform of the tree (0.5 ms for the multi-crop pipelines, a sixth of a sample's work). Here
    each pipeline's transforms share one numpy and one Python generator (:func:`_shared_streams`,
    built once per process), which are reseeded in place (~20 us each).
    """
    if not isinstance(index, SampleIndex):
        return
    streams = _shared_streams(dataset)
    seeds = np.random.SeedSequence(index.key).generate_state(max(1, len(streams)), dtype=np.uint64)
    for (numpy_generator, python_random), seed in zip(streams, seeds, strict=False):
        numpy_generator.bit_generator.state = np.random.PCG64(int(seed)).state
        python_random.seed(int(seed))


def _shared_streams(dataset: object) -> list[tuple[np.random.Generator, random.Random]]:
    """One ``(numpy, python)`` generator pair per ``Compose`` of ``dataset``, shared by all its transforms.

    Cached on the dataset; rebuilt when a compose's generators were replaced since (``worker_init_fn``
    reseeds with ``set_random_seed``, which gives every transform fresh ones).
    """
    cached = getattr(dataset, "_clsvit_streams", None)
    if cached is not None and all(compose.random_generator is pair[0] for compose, pair in cached):
        return [pair for _, pair in cached]
    pairs = []
    for compose in find_composes(dataset):
        pair = (np.random.default_rng(), random.Random())
        _share(compose, *pair)
        pairs.append((compose, pair))
    try:
        dataset._clsvit_streams = pairs  # type: ignore[attr-defined]
    except AttributeError:  # a dataset with __slots__: rebuilt every call, still correct
        pass
    return [pair for _, pair in pairs]


def _share(transform: object, numpy_generator: np.random.Generator, python_random: random.Random) -> None:
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(numpy_generator, python_random)
    for child in getattr(transform, "transforms", None) or ():
        _share(child, numpy_generator, python_random)


def batch_rng(keys: list[tuple[int, int, int]], stream: int) -> np.random.Generator:
    """A generator for a batch-level draw (e.g. the iBOT masks) keyed on its samples' keys."""
    return np.random.default_rng(np.random.SeedSequence([stream, *(value for key in keys for value in key)]))


class EpochSeededSampler(Sampler[int]):
    """Random (or sequential) order drawn from ``(seed, epoch)``; yields :class:`SampleIndex` keys.

    A plain ``RandomSampler`` draws from the global torch RNG when an epoch's iterator starts, which
    Lightning does at different moments in a fresh and in a resumed run. Here the permutation comes
    from a generator seeded from ``(seed, epoch)`` when the order is drawn; ``generator`` is for the
    DataLoader (worker base seeds).
    """

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
        if self.shuffle:
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self._epoch_seed())).tolist()
        else:
            order = range(self.length)
        seed, epoch = self.seed, self.epoch
        return iter([SampleIndex(index, seed, epoch) for index in order])

    def __len__(self) -> int:
        return self.length


def seeded_dataloader(dataset: Any, seed: int = 0, shuffle: bool = True, **kwargs: Any):  # noqa: ANN201
    """A resumable DataLoader whose order and augmentation keys are functions of ``(seed, epoch)``."""
    from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: PLC0415

    sampler = EpochSeededSampler(dataset, seed=seed, shuffle=shuffle)
    kwargs.setdefault("worker_init_fn", worker_init_fn)  # reseeds albumentations in each worker
    return StatefulDataLoader(dataset, sampler=sampler, generator=sampler.generator, **kwargs)
