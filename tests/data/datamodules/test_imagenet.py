"""ImageNetDataModule on the synthetic scenes (real loader, real layout): each mode's batches, YAML construction."""

import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule

from clsvit_lightning.data import ImageNetDataModule


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
