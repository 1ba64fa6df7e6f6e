"""LightningDataModules built from plain typed arguments (LightningCLI / YAML)."""

from clsvit_lightning.data.datamodules.dense import DepthDataModule, SegmentationDataModule
from clsvit_lightning.data.datamodules.imagenet import ImageNetDataModule

__all__ = ["DepthDataModule", "ImageNetDataModule", "SegmentationDataModule"]
