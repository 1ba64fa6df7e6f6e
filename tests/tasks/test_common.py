"""What the tasks share: counting each evaluation sample once under DDP, the global batch, the loss check."""

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from clsvit_lightning.tasks.common import (
    NonFiniteLossError,
    batch_scaled_lr,
    check_finite_loss,
    counted_samples,
    global_batch_size,
)


@pytest.mark.parametrize(("length", "world_size", "batch_size"), [(13, 4, 2), (12, 4, 3), (3, 5, 2), (10, 1, 4)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_counted_samples_see_each_sample_once_over_the_ranks(length, world_size, batch_size, shuffle):
    seen = []
    for rank in range(world_size):
        sampler = DistributedSampler(range(length), world_size, rank, shuffle=shuffle, seed=3)
        loader = DataLoader(range(length), batch_size=batch_size, sampler=sampler)
        trainer = SimpleNamespace(testing=False, val_dataloaders=loader)
        for batch_idx, batch in enumerate(loader):
            seen += batch[counted_samples(trainer, batch_idx, len(batch))].tolist()
    assert sorted(seen) == list(range(length))


def test_without_a_distributed_sampler_every_sample_counts():
    loader = DataLoader(range(5), batch_size=4)
    trainer = SimpleNamespace(testing=True, test_dataloaders=[loader])
    assert counted_samples(trainer, 1, 1).tolist() == [True]


def test_global_batch_is_per_device_times_devices_times_accumulation():
    trainer = SimpleNamespace(datamodule=SimpleNamespace(batch_size=8), world_size=4, accumulate_grad_batches=2)
    assert global_batch_size(trainer, "test") == 64
    assert batch_scaled_lr(trainer, 1e-3, "linear_wrt_256", "Task") == pytest.approx(1e-3 * 64 / 256)
    no_batch = SimpleNamespace(datamodule=None, world_size=1, accumulate_grad_batches=1)
    assert batch_scaled_lr(no_batch, 1e-3, "none", "Task") == 1e-3  # no batch size needed
    with pytest.raises(ValueError, match="Task: lr_scaling_rule='sqrt_wrt_1024' needs the per-device batch size"):
        batch_scaled_lr(no_batch, 1e-3, "sqrt_wrt_1024", "Task")


def test_a_non_finite_loss_names_the_step_and_each_term():
    check_finite_loss(torch.tensor(1.0), 3)
    terms = {"dino": torch.tensor(1.0), "ibot": torch.tensor(float("nan"))}
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 7 \(\{'dino': 1.0, 'ibot': nan\}\)"):
        check_finite_loss(terms["ibot"], 7, terms)
