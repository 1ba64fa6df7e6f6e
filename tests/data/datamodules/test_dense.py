"""Segmentation (synthetic scenes in the ADE20K layout) and depth DataModules: batches and padding."""

import shutil

import numpy as np
import pytest
import torch

from clsvit_lightning.data import DepthDataModule, SegmentationDataModule
from tests.data.conftest import random_rgb, write_image, write_label


def test_segmentation_on_synthetic_ade20k(synthetic_root):
    dm = SegmentationDataModule(
        str(synthetic_root / "ade20k"), "ade20k", num_classes=5, crop_size=32, base_size=40,
        batch_size=4, val_batch_size=2, num_workers=0, pin_memory=False,
    )  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["mask"].shape == (4, 32, 32)
    labels = batch["mask"][batch["mask"] != 255]
    assert labels.max() < 5 and (labels == 0).any()  # background is class 0 after reduce-zero-label
    val = next(iter(dm.val_dataloader()))
    height, width = val["image"].shape[-2:]
    for (h, w), mask in zip(val["image_size"].tolist(), val["mask"], strict=True):
        assert (mask[h:, :] == 255).all() and (mask[:, w:] == 255).all() and (h, w) != (0, 0)
    assert max(h for h, _ in val["image_size"].tolist()) == height


def test_folder_dataset_needs_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationDataModule("/nowhere", "folder")


def test_depth_datamodule(tmp_path):
    lines = []
    for index in range(4):
        write_image(tmp_path / f"scene/rgb_{index}.jpg", random_rgb(30, 40, seed=index))
        write_label(tmp_path / f"scene/depth_{index}.png", np.full((30, 40), 1000 * (index + 1), np.uint16))
        lines.append(f"scene/rgb_{index}.jpg scene/depth_{index}.png")
    (tmp_path / "train.txt").write_text("\n".join(lines))
    (tmp_path / "test.txt").write_text("\n".join(lines[:2]))
    dm = DepthDataModule(
        str(tmp_path), "train.txt", "test.txt", crop_size=(24, 32), eigen_crop=False,
        batch_size=2, val_batch_size=2, num_workers=0, pin_memory=False,
    )  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 24, 32) and batch["depth"].dtype == torch.float32
    assert batch["valid"].dtype == torch.bool
    valid_depths = set(batch["depth"][batch["valid"]].unique().tolist())
    assert valid_depths <= {1.0, 2.0, 3.0, 4.0}
    val = next(iter(dm.val_dataloader()))
    torch.testing.assert_close(val["depth"][:, 0, 0], torch.tensor([1.0, 2.0]))


def test_batch_larger_than_the_training_set_is_an_error(synthetic_root, tmp_path):
    dm = SegmentationDataModule(
        str(synthetic_root / "ade20k"), "ade20k", num_classes=5, crop_size=32, base_size=40,
        batch_size=32, num_workers=0, pin_memory=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"batch_size=32 is larger than the 24 samples of .*ade20k split 'train'"):
        dm.setup("fit")
    write_image(tmp_path / "scene/rgb.jpg", random_rgb(30, 40))
    write_label(tmp_path / "scene/depth.png", np.full((30, 40), 1000, np.uint16))
    (tmp_path / "train.txt").write_text("scene/rgb.jpg scene/depth.png\n")
    depth = DepthDataModule(str(tmp_path), "train.txt", "train.txt", crop_size=(24, 32), batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match=r"batch_size=2 is larger than the 1 samples of .*train.txt"):
        depth.setup("fit")


def test_segmentation_val_skip_corrupt_drops(synthetic_root, tmp_path):
    shutil.copytree(synthetic_root / "ade20k", tmp_path / "ade20k")
    val_images = sorted((tmp_path / "ade20k/ADEChallengeData2016/images/validation").iterdir())
    val_images[0].write_bytes(val_images[0].read_bytes()[:50])
    dm = SegmentationDataModule(
        str(tmp_path / "ade20k"), "ade20k", num_classes=5, crop_size=32, base_size=40,
        batch_size=4, num_workers=0, pin_memory=False, skip_corrupt=True,
    )  # fmt: skip
    dm.setup("fit")
    assert len(dm.val_dataset) == len(val_images) - 1 and len(dm.train_dataset) == 24
    assert val_images[0] not in [image for image, _ in dm.val_dataset.pairs]
