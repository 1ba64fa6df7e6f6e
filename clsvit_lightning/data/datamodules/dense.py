"""DataModules for dense tasks: semantic segmentation (ADE20K, VOC 2012, Cityscapes, any folder) and NYUv2 depth.

Batches: segmentation ``{"image": [B, 3, H, W], "mask": [B, H, W] long (255 = ignore), "image_size": [B, 2]}``;
depth ``{"image", "depth": [B, H, W] metres, "valid": [B, H, W] bool, "image_size"}``. Validation
images of different sizes are padded bottom/right (mask 255, valid False); ``image_size`` keeps each
original size.
"""

from __future__ import annotations

from typing import Literal

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from clsvit_lightning.data.datamodules.loaders import check_batch_fits, make_loader, trainer_epoch
from clsvit_lightning.data.datasets.depth import DepthDataset
from clsvit_lightning.data.datasets.segmentation import SegmentationDataset
from clsvit_lightning.data.datasets.segmentation_layouts import SegmentationLayout, get_layout
from clsvit_lightning.data.transforms.collate import collate_dense
from clsvit_lightning.data.transforms.dense import (
    depth_train_transform,
    depth_val_transform,
    segmentation_train_transform,
    segmentation_val_transform,
)


class _DenseDataModule(LightningDataModule):
    def __init__(self, batch_size, val_batch_size, num_workers, pin_memory, persistent_workers) -> None:
        super().__init__()
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.loader_options = {
            "num_workers": num_workers,
            "pin_memory": pin_memory,
            "persistent_workers": persistent_workers,
        }

    def train_dataloader(self) -> DataLoader:
        return make_loader(
            self.train_dataset,
            self.batch_size,
            collate_dense,
            True,
            drop_last=True,
            epoch=trainer_epoch(self),
            **self.loader_options,
        )

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.val_dataset, self.val_batch_size, collate_dense, False, **self.loader_options)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


class SegmentationDataModule(_DenseDataModule):
    """``dataset``: a preset (``ade20k``, ``voc2012``, ``cityscapes``) or ``folder`` with the ``folder_*`` fields.

    Train: mmseg recipe (``transforms/dense.py``). Val: ``full`` image (sliding-window inference, the
    ADE20K protocol) or short side ``resize``-d to ``base_size``. ``num_classes`` overrides the
    preset's (e.g. a synthetic set in the ADE20K layout with fewer classes).
    """

    def __init__(
        self,
        root: str,
        dataset: Literal["ade20k", "voc2012", "cityscapes", "folder"] = "ade20k",
        num_classes: int | None = None,
        crop_size: int = 512,
        base_size: int = 512,
        scale_range: tuple[float, float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        val_mode: Literal["full", "resize"] = "full",
        batch_size: int = 16,
        val_batch_size: int = 1,
        num_workers: int = 8,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        skip_corrupt: bool = False,
        folder_image_dir: str = "images/{split}",
        folder_mask_dir: str = "annotations/{split}",
        folder_image_suffix: str = ".jpg",
        folder_mask_suffix: str = ".png",
        folder_reduce_zero_label: bool = False,
    ) -> None:
        super().__init__(batch_size, val_batch_size, num_workers, pin_memory, persistent_workers)
        self.save_hyperparameters()
        if dataset == "folder":
            if num_classes is None:
                raise ValueError("SegmentationDataModule(dataset='folder') needs num_classes")
            self.layout = SegmentationLayout(
                "folder",
                folder_image_dir,
                folder_mask_dir,
                folder_image_suffix,
                folder_mask_suffix,
                num_classes,
                reduce_zero_label=folder_reduce_zero_label,
            )
        else:
            self.layout = get_layout(dataset, num_classes=num_classes)
        self.root = root

    @property
    def num_classes(self) -> int:
        return self.layout.num_classes

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        train = segmentation_train_transform(hp.crop_size, hp.base_size, hp.scale_range, hp.cat_max_ratio)
        val = segmentation_val_transform(hp.val_mode, hp.base_size)
        if stage in (None, "fit"):
            self.train_dataset = SegmentationDataset(self.root, self.layout, "train", train, hp.skip_corrupt)
            check_batch_fits(self.train_dataset, hp.batch_size, self.train_dataset.description)
        self.val_dataset = SegmentationDataset(self.root, self.layout, "val", val, hp.skip_corrupt, evaluation=True)


class DepthDataModule(_DenseDataModule):
    """NYU Depth v2 (layout in ``datasets/depth.py``): train crops with the toolbox recipe, val full frames."""

    def __init__(
        self,
        root: str,
        train_split_file: str = "nyu_train.txt",
        val_split_file: str = "nyu_test.txt",
        crop_size: tuple[int, int] = (416, 544),
        depth_scale: float = 1000.0,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        eigen_crop: bool = True,
        batch_size: int = 16,
        val_batch_size: int = 1,
        num_workers: int = 8,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(batch_size, val_batch_size, num_workers, pin_memory, persistent_workers)
        self.save_hyperparameters()
        self.root = root

    def _dataset(self, split_file: str, transform, eigen_crop: bool, evaluation: bool) -> DepthDataset:
        hp = self.hparams
        return DepthDataset(
            self.root,
            split_file,
            transform,
            hp.depth_scale,
            hp.min_depth,
            hp.max_depth,
            eigen_crop,
            hp.skip_corrupt,
            evaluation,
        )

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in (None, "fit"):
            # Training supervises every measured pixel; the Eigen crop is an evaluation convention.
            train = depth_train_transform(tuple(hp.crop_size))
            self.train_dataset = self._dataset(hp.train_split_file, train, False, evaluation=False)
            check_batch_fits(self.train_dataset, hp.batch_size, self.train_dataset.description)
        self.val_dataset = self._dataset(hp.val_split_file, depth_val_transform(), hp.eigen_crop, evaluation=True)
