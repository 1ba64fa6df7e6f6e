import torch

from clsvit_lightning.data.seeding import EpochSeededSampler, seeded_dataloader


def test_order_is_a_function_of_seed_and_epoch_only():
    sampler = EpochSeededSampler(range(20), seed=3)
    sampler.set_epoch(1)
    first = list(sampler)
    torch.manual_seed(999)  # the global RNG plays no part
    other = EpochSeededSampler(range(20), seed=3)
    other.generator.manual_seed(5)  # nor the state of the loader generator
    other.set_epoch(1)
    assert list(other) == first and sorted(first) == list(range(20))
    sampler.set_epoch(2)
    assert list(sampler) != first
    assert list(EpochSeededSampler(range(5), shuffle=False)) == [0, 1, 2, 3, 4]


def test_seeded_dataloader_uses_the_sampler_generator():
    loader = seeded_dataloader(list(range(10)), seed=1, batch_size=5)
    assert loader.generator is loader.sampler.generator
    assert sorted(torch.cat(list(loader)).tolist()) == list(range(10))
