"""TokenAnalysisCallback inside a tiny Lightning fit (CPU, one step per epoch)."""

import csv
import json

import cv2
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from torch.utils.data import DataLoader, TensorDataset

from clsvit_lightning.analysis import REPORT_KEYS, report_keys
from clsvit_lightning.callbacks import TokenAnalysisCallback
from clsvit_lightning.models import VisionTransformer


class TinySelfDistillation(pl.LightningModule):
    """A student and an EMA-free teacher copy: just enough to train and to hold `teacher_backbone`."""

    def __init__(self):
        super().__init__()
        make = lambda: VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_registers=1)
        self.backbone = make()
        self.teacher_backbone = make().requires_grad_(False)

    def training_step(self, batch, batch_index):
        (images,) = batch
        return self.backbone(images).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.backbone.parameters(), lr=0.1)


def loader():
    return DataLoader(TensorDataset(torch.randn(4, 3, 32, 32)), batch_size=2)


def trainer(tmp_path, callback, loggers, max_epochs=2):
    return pl.Trainer(
        max_epochs=max_epochs, limit_train_batches=1, accelerator="cpu", devices=1, logger=loggers,
        callbacks=[callback], enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )  # fmt: skip


def test_the_callback_analyses_the_teacher_every_n_epochs_and_logs(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        cv2.imwrite(str(folder / f"{index}.png"), np.random.randint(0, 255, (40, 48, 3), np.uint8))
    callback = TokenAnalysisCallback(data=str(folder), every_n_epochs=2, on_fit_start=True, img_size=32)
    csv_logger = CSVLogger(tmp_path, name="csv")
    wandb_logger = WandbLogger(project="analysis-test", save_dir=str(tmp_path), offline=True)
    module = TinySelfDistillation()
    trainer(tmp_path, callback, [csv_logger, wandb_logger], max_epochs=3).fit(module, loader())

    root = tmp_path / "csv" / "version_0" / "analysis"  # trainer.log_dir: the first logger's folder
    assert sorted(p.name for p in root.iterdir()) == ["epoch_001", "start"]  # epoch 2 of 3 (index 1)
    report = json.loads((root / "epoch_001" / "analysis.json").read_text())
    assert report_keys(report) == REPORT_KEYS
    assert report["input"]["num_images"] == 3 and report["model"]["num_registers"] == 1
    assert (root / "start" / "pca.png").is_file()
    assert callback.last_report["model"] == report["model"]

    with open(tmp_path / "csv" / "version_0" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert any(row.get("analysis/norm1_post_cls_patch") for row in rows)
    media = list((tmp_path / "wandb").glob("offline-run-*/files/media/images/analysis/*.png"))
    assert {p.name.split("_")[0] for p in media} >= {"similarity", "pca"}


def test_the_analysed_backbone_is_the_teacher_and_is_configurable(tmp_path):
    images = torch.randn(2, 3, 32, 32)
    module = TinySelfDistillation()
    with torch.no_grad():
        module.teacher_backbone.cls_token.fill_(5.0)  # a teacher [CLS] norm no student has
    callback = TokenAnalysisCallback(images=images, out_dir=str(tmp_path / "out"))
    trainer(tmp_path, callback, loggers=False, max_epochs=1).fit(module, loader())
    teacher_norm = callback.last_report["blocks"][0]["token_norms"]["cls"]
    assert (tmp_path / "out" / "epoch_000" / "analysis.json").is_file()

    student = TokenAnalysisCallback(images=images, backbone_attr="backbone", out_dir=str(tmp_path / "student"))
    student.run(pl.Trainer(logger=False), module, tag="now")
    assert student.last_report["blocks"][0]["token_norms"]["cls"] != pytest.approx(teacher_norm)


def test_configuration_errors_are_named(tmp_path):
    with pytest.raises(ValueError, match="exactly one of `data`"):
        TokenAnalysisCallback()
    with pytest.raises(ValueError, match="every_n_epochs must be >= 1"):
        TokenAnalysisCallback(images=torch.randn(1, 3, 32, 32), every_n_epochs=0)
    callback = TokenAnalysisCallback(images=torch.randn(1, 3, 32, 32), backbone_attr=["encoder", "model.vit"])
    with pytest.raises(
        AttributeError, match=r"backbone_attr=\['encoder', 'model.vit'\]\): none of these .* submodules"
    ):
        trainer(tmp_path, callback, loggers=False, max_epochs=1).fit(TinySelfDistillation(), loader())


def test_two_ranks_do_not_wait_on_each_other(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "tests.callbacks.analysis_ddp", str(tmp_path)], cwd=repo, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "csv/version_0/analysis").iterdir()) == ["epoch_000", "epoch_001"]
