"""A run stopped anywhere and resumed ends bit-identical to the run that never stopped.

Real loaders on the synthetic scenes, with 0 and 2 loader workers, for DINOv2 pretraining
(multi-crop augmentations, iBOT masks, stochastic depth), DeiT III (3-Augment, mixup/cutmix,
stochastic depth), the linear segmentation and depth probes (mmseg / NYU crops) and the linear
classification probe (random-resized crops, a grid of classifiers): the uninterrupted run is
compared, tensor by tensor (every module tensor and the optimizer state) and loss by loss, with the
same run killed after step ``k`` (mid-epoch and at an epoch end) and resumed from its ``last.ckpt``.
"""

import os
import random
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from clsvit_lightning.callbacks.checkpointing import RunCheckpoint
from clsvit_lightning.data.datamodules.dense import DepthDataModule, SegmentationDataModule
from clsvit_lightning.data.datamodules.imagenet import ImageNetDataModule
from clsvit_lightning.data.synthetic.writers import write_synthetic
from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.tasks.depth import MonocularDepth
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining
from clsvit_lightning.tasks.linear_probe import LinearProbe
from clsvit_lightning.tasks.segmentation import SemanticSegmentation
from clsvit_lightning.tasks.supervised import DeiT3Supervised

STEPS_PER_EPOCH, EPOCHS = 3, 2


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, num_train=24, num_val=8, num_classes=4, size_range=(40, 56), seed=3)
    write_nyu_like(out / "nyu", 24)
    return out


def write_nyu_like(root, count: int) -> None:
    """NYU Depth v2's layout: RGB + 16-bit depth PNGs in millimetres, listed in split files."""
    rng = np.random.default_rng(0)
    lines = []
    for index in range(count):
        (root / "room").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / f"room/rgb_{index:05d}.jpg"), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
        depth = rng.integers(500, 9000, (40, 48)).astype(np.uint16)
        cv2.imwrite(str(root / f"room/sync_depth_{index:05d}.png"), depth)
        lines.append(f"/room/rgb_{index:05d}.jpg room/sync_depth_{index:05d}.png 518.8579")
    for split in ("nyu_train.txt", "nyu_test.txt"):
        (root / split).write_text("\n".join(lines) + "\n")


class Killed(RuntimeError):
    """Stands in for SIGKILL: the process dies right after a step; only its checkpoints remain."""


class KillAfter(Callback):
    """Dies as the step after ``step`` starts: step ``step`` and its checkpoint are complete."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Killed(f"killed after step {self.step}")


class RecordLosses(Callback):
    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = outputs["loss"].item()


def backbone(drop_path_rate: float = 0.2) -> VisionTransformer:
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, specialization="paper",
        drop_path_rate=drop_path_rate,
    )  # fmt: skip


def task_and_data(task: str, root, num_workers: int, batch_size: int = 8):
    workers = {"num_workers": num_workers, "persistent_workers": num_workers > 0, "pin_memory": False}
    if task == "dinov2":
        model = DINOv2Pretraining(
            backbone(), num_prototypes=64, head_hidden_dim=48, head_bottleneck_dim=16, warmup_epochs=1,
            base_lr=0.01, warmup_teacher_temperature_epochs=1, freeze_last_layer_epochs=0,
        )  # fmt: skip
        data = ImageNetDataModule(
            str(root / "imagenet"), batch_size=batch_size, crop_size=32, resize_size=36, local_crop_size=16,
            num_local_crops=2, patch_size=8, **workers,
        )  # fmt: skip
    elif task == "depth":
        model = MonocularDepth(backbone(0.0), warmup_steps=2, num_bins=32, upsample=2, lr=0.01)
        data = DepthDataModule(
            str(root / "nyu"), crop_size=(32, 32), eigen_crop=False, batch_size=batch_size, **workers
        )
    elif task == "linear":
        model = LinearProbe(backbone(0.0), num_classes=4, n_last_blocks_options=(1, 2), learning_rates=(0.01, 0.1))
        data = ImageNetDataModule(
            str(root / "imagenet"), mode="linear", batch_size=batch_size, crop_size=32, resize_size=36, **workers
        )
    elif task == "deit3":
        model = DeiT3Supervised(backbone(), num_classes=4, warmup_epochs=1, base_lr=3e-3)
        data = ImageNetDataModule(
            str(root / "imagenet"), mode="supervised", batch_size=8, crop_size=32, resize_size=36, **workers
        )
    else:
        model = SemanticSegmentation(
            backbone(0.0), num_classes=5, warmup_steps=2, inference="whole", crop_size=32, stride=16, lr=0.01
        )
        data = SegmentationDataModule(
            str(root / "ade20k"), num_classes=5, crop_size=32, base_size=40, batch_size=8, **workers
        )
    return model, data


def run(
    folder, root, num_workers: int, kill_after: int | None = None, resume: bool = False, task: str = "dinov2",
    devices: int = 1, strategy: str = "auto", batch_size: int = 8,
):  # fmt: skip
    return fit_run(
        folder, lambda: task_and_data(task, root, num_workers, batch_size), kill_after, resume, devices, strategy
    )


def fit_run(folder, build, kill_after=None, resume=False, devices=1, strategy="auto"):
    """Fit ``build()``'s (module, datamodule) under ``folder`` with a checkpoint every step; optionally
    killed after ``kill_after`` steps, or resumed from ``last.ckpt``. Returns (module, trainer, losses)."""
    seed_everything(0)  # the run's seed (its config), which also keys the data
    if resume:  # a resumed process is elsewhere in its random streams: they must come from the checkpoint
        torch.rand(1000), np.random.rand(1000), random.random()
    (model, datamodule), losses = build(), RecordLosses()
    callbacks = [RunCheckpoint(folder / "ckpt", save_last=True, save_top_k=0, every_n_train_steps=1), losses]
    if kill_after is not None:
        callbacks.append(KillAfter(kill_after))
    trainer = Trainer(
        default_root_dir=folder, max_epochs=EPOCHS, accelerator="cpu", devices=devices, strategy=strategy,
        logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks, limit_train_batches=STEPS_PER_EPOCH, limit_val_batches=0,
    )  # fmt: skip
    try:
        trainer.fit(model, datamodule, ckpt_path=folder / "ckpt" / "last.ckpt" if resume else None)
    except Killed:
        pass
    return model, trainer, losses.losses


def assert_same_state(a: Trainer, b: Trainer) -> None:
    for (name, x), (_, y) in zip(
        a.lightning_module.state_dict().items(), b.lightning_module.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), name
    for state_a, state_b in zip(a.optimizers[0].state.values(), b.optimizers[0].state.values(), strict=True):
        assert state_a.keys() == state_b.keys()
        for key, value in state_a.items():  # tensors, and plain numbers (LAMB's step count)
            assert torch.equal(value, state_b[key]) if torch.is_tensor(value) else value == state_b[key], key


CASES = [
    ("dinov2", 0, 2), ("dinov2", 2, 2), ("dinov2", 0, 3), ("dinov2", 2, 3),
    ("deit3", 2, 2), ("deit3", 0, 3), ("segmentation", 2, 2), ("segmentation", 0, 3), ("depth", 2, 2),
    ("linear", 2, 2),
]  # fmt: skip


@pytest.mark.parametrize(
    "task, num_workers, kill_after", CASES,
    ids=[f"{t}-{w}workers-{'epoch_end' if k % STEPS_PER_EPOCH == 0 else 'mid_epoch'}" for t, w, k in CASES],
)  # fmt: skip
def test_killed_and_resumed_run_is_bit_identical(tmp_path, synthetic_root, task, num_workers, kill_after):
    _, reference, reference_losses = run(tmp_path / "reference", synthetic_root, num_workers, task=task)
    assert reference.global_step == STEPS_PER_EPOCH * EPOCHS
    _, killed, first_losses = run(tmp_path / "run", synthetic_root, num_workers, kill_after=kill_after, task=task)
    assert killed.global_step == kill_after
    _, resumed, resumed_losses = run(tmp_path / "run", synthetic_root, num_workers, resume=True, task=task)
    assert resumed.global_step == reference.global_step
    assert {**first_losses, **resumed_losses} == reference_losses
    assert min(resumed_losses) == kill_after + 1  # no step replayed, none skipped
    assert_same_state(reference, resumed)


def test_runs_with_0_and_2_workers_see_the_same_batches(tmp_path, synthetic_root):
    _, zero, zero_losses = run(tmp_path / "zero", synthetic_root, 0)
    _, two, two_losses = run(tmp_path / "two", synthetic_root, 2)
    assert zero_losses == two_losses
    assert_same_state(zero, two)


def test_killed_and_resumed_ddp_run_is_bit_identical(tmp_path, synthetic_root):
    """Two processes, each reading its shard (Lightning's DistributedSamplerWrapper around ours)."""
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "tests.tasks.ddp_resume", str(synthetic_root), str(tmp_path)],
        cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    recorded = torch.load(tmp_path / "ddp_resume.pt", weights_only=True)
    (reference_losses, reference_state), (resumed_losses, resumed_state) = recorded["reference"], recorded["resumed"]
    assert len(reference_losses) == STEPS_PER_EPOCH * EPOCHS and resumed_losses == reference_losses
    assert recorded["first_resumed_step"] == 3  # killed after step 2 (mid-epoch): no step replayed
    for name, value in reference_state.items():
        assert torch.equal(resumed_state[name], value), name
