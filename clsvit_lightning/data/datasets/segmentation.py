"""Semantic segmentation pairs (image, class mask) read from any :class:`SegmentationLayout`."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
from torch.utils.data import Dataset

from clsvit_lightning.data.datasets.base import CorruptSkipper
from clsvit_lightning.data.datasets.segmentation_layouts import SegmentationLayout
from clsvit_lightning.data.io import DatasetLayoutError, LabelError, list_images, read_label_map, read_rgb, require_dir


def _strip_suffix(path: Path, suffix: str) -> str:
    text = path.as_posix()
    return text[: -len(suffix)] if text.lower().endswith(suffix.lower()) else path.with_suffix("").as_posix()


class SegmentationDataset(Dataset):
    """Samples ``{"image": [H, W, 3] uint8, "mask": [H, W] uint8 train ids, 255 = ignore}`` after ``transform``.

    ``transform`` is an albumentations ``Compose`` called as ``transform(image=..., mask=...)``.
    """

    def __init__(
        self,
        root: str | Path,
        layout: SegmentationLayout,
        split: str = "train",
        transform: A.BaseCompose | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        self.root = Path(root)
        self.layout = layout
        require_dir(self.root, layout.describe())
        disk_split = layout.on_disk_split(split)
        image_dir = require_dir(self.root / layout.image_dir.format(split=disk_split), layout.describe())
        mask_dir = require_dir(self.root / layout.mask_dir.format(split=disk_split), layout.describe())
        if layout.split_file:
            split_file = self.root / layout.split_file.format(split=disk_split)
            if not split_file.is_file():
                raise DatasetLayoutError(f"missing split file {split_file}; expected this layout:\n{layout.describe()}")
            ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
            image_paths = [image_dir / f"{sample_id}{layout.image_suffix}" for sample_id in ids]
        else:
            image_paths = [p for p in list_images(image_dir, layout.recursive) if p.name.endswith(layout.image_suffix)]
            ids = [_strip_suffix(p.relative_to(image_dir), layout.image_suffix) for p in image_paths]
        if not ids:
            raise DatasetLayoutError(f"no *{layout.image_suffix} image in {image_dir}; expected:\n{layout.describe()}")
        self.pairs: list[tuple[Path, Path]] = []
        for sample_id, image_path in zip(ids, image_paths, strict=True):
            mask_path = mask_dir / f"{sample_id}{layout.mask_suffix}"
            if not image_path.is_file():
                raise DatasetLayoutError(f"image {image_path} (listed in the split) does not exist")
            if not mask_path.is_file():
                raise DatasetLayoutError(f"image {image_path} has no mask: expected {mask_path}")
            self.pairs.append((image_path, mask_path))
        self.split = split
        self.transform = transform
        self.skipper = CorruptSkipper(skip_corrupt)
        self._tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def num_classes(self) -> int:
        return self.layout.num_classes

    def __len__(self) -> int:
        return len(self.pairs)

    def to_train_ids(self, raw: np.ndarray, mask_path: Path) -> np.ndarray:
        """Raw stored labels -> train ids (uint8, 255 ignore); raise on values the layout does not allow."""
        max_raw = 255 if raw.dtype == np.uint8 else 65535
        if max_raw not in self._tables:
            self._tables[max_raw] = self.layout.label_tables(max_raw)
        to_train_id, is_valid = self._tables[max_raw]
        if not is_valid[raw].all():
            bad = np.unique(raw[~is_valid[raw]])[:10].tolist()
            expected = (
                f"label ids 0..{len(to_train_id) - 1} mapped by the {self.layout.name} table"
                if self.layout.label_map
                else f"0..{self.num_classes - (0 if self.layout.reduce_zero_label else 1)}"
            )
            raise LabelError(
                f"mask {mask_path} holds label values {bad} outside the range of {self.layout.name} "
                f"({expected}, or {self.layout.ignore_index} = ignore)"
            )
        return to_train_id[raw]

    def _load(self, index: int) -> dict:
        image_path, mask_path = self.pairs[index]
        image = read_rgb(image_path)
        raw = read_label_map(mask_path)
        if raw.shape != image.shape[:2]:
            raise LabelError(
                f"mask {mask_path} is {raw.shape[1]}x{raw.shape[0]} (WxH) but image {image_path} is "
                f"{image.shape[1]}x{image.shape[0]}; a mask must have its image's size"
            )
        mask = self.to_train_ids(raw, mask_path)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {"image": image, "mask": mask}

    def __getitem__(self, index: int) -> dict:
        return self.skipper.load(index, len(self), self._load, lambda i: self.pairs[i][0])

    @property
    def num_skipped(self) -> int:
        return self.skipper.num_skipped
