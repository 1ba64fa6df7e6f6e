"""``RunCheckpoint``: one ``last.ckpt`` that is always the newest, a checked folder, no non-finite weights."""

import os

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from clsvit_lightning.callbacks.checkpointing import CheckpointFolderError, NonFiniteWeightsError, RunCheckpoint
from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining
from tests.tasks.tiny_ssl_data import TinySSLData


def tiny_module(**kwargs) -> DINOv2Pretraining:
    seed_everything(0)
    backbone = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    return DINOv2Pretraining(
        backbone, num_prototypes=64, head_hidden_dim=48, head_bottleneck_dim=16, warmup_epochs=0,
        warmup_teacher_temperature_epochs=0, freeze_last_layer_epochs=0, **kwargs,
    )  # fmt: skip


def fit(folder, module, max_epochs: int, ckpt_path=None, callbacks=None) -> Trainer:
    trainer = Trainer(
        default_root_dir=folder, max_epochs=max_epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks or [RunCheckpoint(folder / "ckpt", save_last=True, save_top_k=0, every_n_train_steps=3)],
    )  # fmt: skip
    trainer.fit(module, TinySSLData(batch_size=4, length=16), ckpt_path=ckpt_path)
    return trainer


def test_last_is_overwritten_in_place_by_a_resumed_run(tmp_path):
    fit(tmp_path, tiny_module(), max_epochs=1)  # 4 steps: saves at step 3 and at the epoch end
    first = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert first["global_step"] == 4
    # A requeued job: a fresh callback finds the old last.ckpt in its folder and resumes from it.
    fit(tmp_path, tiny_module(), max_epochs=2, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.ckpt"]  # no last-v1.ckpt
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 8


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_folder_is_found_before_training(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    module = tiny_module()
    with pytest.raises(CheckpointFolderError, match=f"checkpoint folder {locked / 'ckpt'} is not writable"):
        fit(locked, module, max_epochs=1)
    assert module.global_step == 0


def test_a_folder_that_cannot_be_created_is_found_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    module = tiny_module()
    with pytest.raises(CheckpointFolderError, match=f"checkpoint folder {blocker / 'ckpt'} is not writable"):
        fit(blocker, module, max_epochs=1)


def test_non_finite_weights_are_never_written(tmp_path):
    module = tiny_module()
    trainer = fit(tmp_path, module, max_epochs=1)
    good = (tmp_path / "ckpt" / "last.ckpt").read_bytes()
    with torch.no_grad():
        module.student["backbone"].blocks[0].norm1.weight[0] = float("nan")
    callback = trainer.checkpoint_callback
    with pytest.raises(NonFiniteWeightsError, match=r"not writing .*last.ckpt: 1 parameter tensors .*student.backbone"):
        callback._save_checkpoint(trainer, str(tmp_path / "ckpt" / "last.ckpt"))
    assert (tmp_path / "ckpt" / "last.ckpt").read_bytes() == good
