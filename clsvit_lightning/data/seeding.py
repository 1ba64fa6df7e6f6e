"""Different augmentations in every worker and every epoch (albumentations 2.0.8 worker-seeding bug).

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

import albumentations as A
import numpy as np
import torch

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
