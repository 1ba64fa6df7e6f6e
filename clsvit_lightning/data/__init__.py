"""Data: datasets in their real layouts, augmentation pipelines, DataModules, synthetic scenes.

``from clsvit_lightning.data import ImageNetDataModule, SegmentationDataModule, DepthDataModule``.
The DataModules are imported on first use, so the transforms, datasets and the synthetic generator
import without Lightning (the data workers and ``clsvit synth`` stay light).
"""

from clsvit_lightning.data.datasets.depth import DepthDataset
from clsvit_lightning.data.datasets.imagenet import ImageFolderDataset
from clsvit_lightning.data.datasets.segmentation import SegmentationDataset
from clsvit_lightning.data.io import CorruptImageError, DatasetLayoutError, LabelError
from clsvit_lightning.data.transforms.collate import MultiCropCollate
from clsvit_lightning.data.transforms.multicrop import MultiCropTransform

_DATAMODULES = ("DepthDataModule", "ImageNetDataModule", "SegmentationDataModule")


def __getattr__(name: str):
    if name in _DATAMODULES:
        from clsvit_lightning.data import datamodules  # noqa: PLC0415

        return getattr(datamodules, name)
    raise AttributeError(f"module 'clsvit_lightning.data' has no attribute {name!r}")


__all__ = [
    "CorruptImageError",
    "DatasetLayoutError",
    "DepthDataModule",
    "DepthDataset",
    "ImageFolderDataset",
    "ImageNetDataModule",
    "LabelError",
    "MultiCropCollate",
    "MultiCropTransform",
    "SegmentationDataModule",
    "SegmentationDataset",
]
