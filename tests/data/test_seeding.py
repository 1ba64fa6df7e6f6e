"""Every worker and every epoch draws different augmentations (albumentations 2.0.8 replays one stream per worker)."""

import albumentations as A
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from clsvit_lightning.data.seeding import find_composes, reseed_augmentations, seed_sample, worker_init_fn
from clsvit_lightning.data.transforms.multicrop import MultiCropTransform


class AugmentedConstant(Dataset):
    """8 copies of one image through a random crop + flip: identical outputs mean a replayed stream."""

    def __init__(self) -> None:
        self.image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        self.transform = A.Compose([A.RandomResizedCrop((16, 16), scale=(0.1, 1.0)), A.HorizontalFlip()])

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> bytes:
        return self.transform(image=self.image)["image"].tobytes()


def draw_epochs(persistent: bool, init_fn) -> list[list[bytes]]:
    loader = DataLoader(
        AugmentedConstant(),
        batch_size=1,
        num_workers=2,
        persistent_workers=persistent,
        worker_init_fn=init_fn,
        collate_fn=lambda batch: batch[0],
        generator=torch.Generator().manual_seed(0),
    )
    return [list(loader) for _ in range(2)]


def test_without_reseeding_the_bug_is_there():
    """Control: the plain loader repeats crops across workers and across epochs (so the next test can fail)."""
    epoch_0, epoch_1 = draw_epochs(persistent=False, init_fn=None)
    assert len(set(epoch_0)) == 4  # 2 workers replay the same 4 draws
    assert epoch_0 == epoch_1


@pytest.mark.parametrize("persistent", [False, True])
def test_worker_init_fn_gives_distinct_augmentations_per_worker_and_epoch(persistent):
    epoch_0, epoch_1 = draw_epochs(persistent, worker_init_fn)
    assert len(set(epoch_0 + epoch_1)) == 16


def test_finds_every_compose_and_seeds_each_differently():
    transform = MultiCropTransform(16, 8, num_local_crops=2)
    holder = type("Holder", (), {})()
    holder.transform, holder.extra = transform, {"nested": [transform.local]}
    composes = find_composes(holder)
    assert len(composes) == 3 and {id(c) for c in composes} == {
        id(transform.global_1),
        id(transform.global_2),
        id(transform.local),
    }
    reseed_augmentations(holder, seed=5)
    assert len({c.seed for c in composes}) == 3
    first = transform.global_1(image=np.zeros((20, 20, 3), np.uint8))
    reseed_augmentations(holder, seed=5)
    again = transform.global_1(image=np.zeros((20, 20, 3), np.uint8))
    np.testing.assert_array_equal(first["image"], again["image"])  # same seed, same draw


def test_global_rank_under_each_launcher(monkeypatch):
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from clsvit_lightning.data.seeding import global_rank

    for variable in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    assert global_rank() == 0
    # Lightning's launcher on node 1 of 2 (4 GPUs each): LOCAL_RANK=1, the strategy's global rank 5.
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(rank_zero_only, "rank", 5)
    assert global_rank() == 5
    monkeypatch.setenv("SLURM_PROCID", "6")
    assert global_rank() == 6
    monkeypatch.setenv("RANK", "7")  # torchrun
    assert global_rank() == 7


def test_sample_lists_are_not_walked():
    from pathlib import Path

    transform = MultiCropTransform(16, 8, num_local_crops=2)
    dataset = type("Dataset", (), {})()
    dataset.samples = [(Path(f"/x/{i}.JPEG"), i % 10) for i in range(300_000)]  # an ImageNet-sized list
    dataset.transform = transform
    stray = MultiCropTransform(16, 8, num_local_crops=1).local
    dataset.samples.append(stray)  # inside a sample list: not searched for (the list is not walked)
    composes = find_composes(dataset)
    assert {id(c) for c in composes} == {id(transform.global_1), id(transform.global_2), id(transform.local)}


class MultiCropImages(Dataset):
    def __init__(self):
        self.transform = MultiCropTransform(global_crop_size=32, local_crop_size=16, num_local_crops=2)
        self.image = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)

    def __len__(self):
        return 4

    def __getitem__(self, index):
        seed_sample(self, index)
        return np.concatenate([c.ravel() for c in self.transform(self.image)["global_crops"]])


def test_sample_keys_fix_the_augmentations_whatever_came_before():
    from clsvit_lightning.data.seeding import SampleIndex

    dataset = MultiCropImages()
    first = dataset[SampleIndex(1, 0, 0)]
    dataset[SampleIndex(2, 0, 0)], dataset[SampleIndex(3, 0, 5)]  # other draws in between
    np.testing.assert_array_equal(dataset[SampleIndex(1, 0, 0)], first)
    assert not np.array_equal(dataset[SampleIndex(1, 0, 1)], first)  # another epoch, other crops
    assert not np.array_equal(dataset[SampleIndex(2, 0, 0)], first)  # another sample
    assert not np.array_equal(dataset[SampleIndex(1, 7, 0)], first)  # another seed
    reseed_augmentations(dataset, 123)  # a worker start replaces the generators: the keys still rule
    np.testing.assert_array_equal(dataset[SampleIndex(1, 0, 0)], first)
    unkeyed = [dataset[1] for _ in range(2)]  # plain indices keep drawing from the running streams
    assert not np.array_equal(*unkeyed)
