"""ImageNetDataModule on the synthetic scenes (real loader, real layout): each mode's batches, YAML construction."""

import shutil

import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule

from clsvit_lightning.data import DatasetLayoutError, ImageNetDataModule


def datamodule(root, mode, **overrides) -> ImageNetDataModule:
    options = dict(batch_size=4, num_workers=0, pin_memory=False, crop_size=32, resize_size=36, local_crop_size=16)
    return ImageNetDataModule(str(root / "imagenet"), mode=mode, **{**options, **overrides})


def test_ssl_batches(synthetic_root):
    dm = datamodule(synthetic_root, "ssl", num_local_crops=2, patch_size=8)
    dm.setup("fit")
    assert dm.num_classes == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["global_crops"].shape == (2, 4, 3, 32, 32) and batch["local_crops"].shape == (2, 4, 3, 16, 16)
    assert batch["masks"].shape == (2, 4, 16) and batch["masks"].any(-1).sum() == 4
    assert batch["labels"].shape == (4,) and 0 <= batch["labels"].min() and batch["labels"].max() < 4
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape == (4, 3, 32, 32)


@pytest.mark.parametrize("mode", ["supervised", "linear", "eval"])
def test_single_view_modes(synthetic_root, mode):
    dm = datamodule(synthetic_root, mode)
    dm.setup("fit")
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    if mode == "eval":
        # k-NN banks: in order, nothing dropped, deterministic.
        labels = torch.cat([b["label"] for b in loader])
        assert labels.tolist() == [label for _, label in dm.train_dataset.samples]
        torch.testing.assert_close(next(iter(loader))["image"], batch["image"])


def test_feature_dataloader_uses_train_class_indices(synthetic_root):
    dm = datamodule(synthetic_root, "ssl")
    loader = dm.feature_dataloader("val")
    assert loader.dataset.classes == dm.classes and len(loader.dataset) == 8


def test_unknown_mode():
    with pytest.raises(ValueError, match="mode='dino'"):
        ImageNetDataModule("/nowhere", mode="dino")


def test_built_from_yaml_like_the_cli(synthetic_root):
    parser = ArgumentParser()
    parser.add_subclass_arguments(LightningDataModule, "data")
    config = parser.parse_string(
        f"""
data:
  class_path: clsvit_lightning.data.ImageNetDataModule
  init_args:
    root: {synthetic_root / "imagenet"}
    mode: ssl
    blur_probabilities: as_written
    num_local_crops: 4
    global_crop_scale: [0.4, 1.0]
"""
    )
    dm = parser.instantiate(config).data
    assert isinstance(dm, ImageNetDataModule)
    transform = dm.train_transform()
    assert transform.blur_probabilities == "as_written" and transform.num_local_crops == 4
    assert dm.hparams.global_crop_scale == (0.4, 1.0)


def copy_imagenet(synthetic_root, tmp_path, splits=("train", "val")):
    for split in splits:
        shutil.copytree(synthetic_root / "imagenet" / split, tmp_path / "imagenet" / split)
    return tmp_path


def test_ssl_pretraining_needs_only_train(synthetic_root, tmp_path):
    root = copy_imagenet(synthetic_root, tmp_path, splits=("train",))
    dm = datamodule(root, "ssl", num_local_crops=2, patch_size=8)
    dm.setup("fit")  # val/ is never read by pretraining: not required
    assert next(iter(dm.train_dataloader()))["global_crops"].shape == (2, 4, 3, 32, 32)
    # Whatever reads val/ (the val loader, k-NN banks) says which folder it needs.
    with pytest.raises(
        DatasetLayoutError, match=r"(?s)mode='ssl'.*'val' split is read for evaluation.*missing folder .*val"
    ):
        dm.val_dataloader()
    with pytest.raises(DatasetLayoutError, match="missing folder .*val"):
        dm.feature_dataloader("val")
    with pytest.raises(DatasetLayoutError, match="missing folder .*val"):
        dm.setup("validate")
    # Modes that validate check val/ up front.
    with pytest.raises(DatasetLayoutError, match="missing folder .*val"):
        datamodule(root, "supervised").setup("fit")


def test_ssl_pretraining_accepts_ilsvrc_flat_val(synthetic_root, tmp_path):
    root = copy_imagenet(synthetic_root, tmp_path)
    val = root / "imagenet" / "val"
    for path in list(val.glob("*/*.JPEG")):
        path.rename(val / path.name)
    for folder in [p for p in val.iterdir() if p.is_dir()]:
        folder.rmdir()
    dm = datamodule(root, "ssl", num_local_crops=2, patch_size=8)
    dm.setup("fit")
    next(iter(dm.train_dataloader()))
    with pytest.raises(DatasetLayoutError, match="val holds 8 images directly but no class folders"):
        dm.val_dataloader()


def test_batch_larger_than_the_training_set_is_an_error(synthetic_root):
    for mode in ("ssl", "supervised", "linear"):
        dm = datamodule(synthetic_root, mode, batch_size=32)
        with pytest.raises(ValueError, match=r"batch_size=32 is larger than the 24 samples of .*'train'"):
            dm.setup("fit")
        with pytest.raises(ValueError, match="batch_size=32"):
            dm.train_dataloader()
    # eval mode keeps every sample (no drop_last): a short last batch is fine.
    dm = datamodule(synthetic_root, "eval", batch_size=32)
    dm.setup("fit")
    assert len(next(iter(dm.train_dataloader()))["label"]) == 24


def test_skip_corrupt_evaluation_drops_and_training_substitutes(synthetic_root, tmp_path):
    root = copy_imagenet(synthetic_root, tmp_path)
    bad = sorted((root / "imagenet" / "val").glob("*/*.JPEG"))[0]
    bad.write_bytes(bad.read_bytes()[:50])
    train_bad = sorted((root / "imagenet" / "train").glob("*/*.JPEG"))[0]
    train_bad.write_bytes(train_bad.read_bytes()[:50])
    dm = datamodule(root, "linear", skip_corrupt=True, val_batch_size=3)
    dm.setup("fit")
    labels = torch.cat([batch["label"] for batch in dm.val_dataloader()])
    assert len(labels) == len(dm.val_dataset) == 7  # 8 minus the corrupt one, nothing repeated
    assert bad not in [path for path, _ in dm.val_dataset.samples]
    assert dm.feature_dataloader("val").dataset is dm.val_dataset  # built (and reported) once per split
    assert len(dm.train_dataset) == 24  # training keeps its length: the next image stands in


def test_lightning_fit_without_val_folder(synthetic_root, tmp_path):
    # What a pretraining run does: a module without validation_step never asks for the val loader.
    from lightning.pytorch import LightningModule, Trainer

    class Pretrain(LightningModule):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def training_step(self, batch, batch_idx):
            return (batch["global_crops"].float().mean() * self.scale) ** 2

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    root = copy_imagenet(synthetic_root, tmp_path, splits=("train",))
    trainer = Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(Pretrain(), datamodule=datamodule(root, "ssl", num_local_crops=2, patch_size=8))
    assert trainer.global_step == 2
