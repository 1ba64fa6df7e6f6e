"""Semantic segmentation pairs (image, class mask) read from any :class:`SegmentationLayout`.

Images are decoded as stored, ignoring EXIF orientation: masks carry none, and a phone photo
rotated on decode would no longer line up with its mask. Suffixes match in any case, and ``.jpg``
also matches ``.jpeg`` (ADE20K has ``.JPG`` files). What a split leaves out (files without the
image suffix, broken symlinks, masks without an image, corrupt pairs dropped from an evaluation
set) is counted and logged as one warning per split, with one example path per reason.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
from torch.utils.data import Dataset

from clsvit_lightning.data.datasets.base import CorruptSkipper, decodable_indices
from clsvit_lightning.data.datasets.segmentation_layouts import SegmentationLayout
from clsvit_lightning.data.io import (
    DatasetLayoutError,
    LabelError,
    SkipReport,
    check_mask_size,
    find_with_suffix,
    list_images,
    read_label_map,
    read_rgb,
    require_dir,
    strip_suffix,
)
from clsvit_lightning.data.seeding import seed_sample


def _strip_suffix(path: Path, suffix: str) -> str:
    stripped = strip_suffix(path.as_posix(), suffix)
    return stripped if stripped is not None else path.with_suffix("").as_posix()


class SegmentationDataset(Dataset):
    """Samples ``{"image": [H, W, 3] uint8, "mask": [H, W] uint8 train ids, 255 = ignore}`` after ``transform``.

    ``transform`` is an albumentations ``Compose`` called as ``transform(image=..., mask=...)``.
    ``skip_corrupt``: a training set (``evaluation=False``) substitutes the next pair for a corrupt
    one; an evaluation set decodes every pair once here and drops the corrupt ones (``datasets/base.py``).
    ``skipped`` holds what the split left out, by reason.
    """

    def __init__(
        self,
        root: str | Path,
        layout: SegmentationLayout,
        split: str = "train",
        transform: A.BaseCompose | None = None,
        skip_corrupt: bool = False,
        evaluation: bool = False,
    ) -> None:
        self.root = Path(root)
        self.layout = layout
        require_dir(self.root, layout.describe())
        disk_split = layout.on_disk_split(split)
        image_dir = require_dir(self.root / layout.image_dir.format(split=disk_split), layout.describe())
        mask_dir = require_dir(self.root / layout.mask_dir.format(split=disk_split), layout.describe())
        self.skipped = SkipReport(f"{layout.name} split {split!r} ({image_dir})")
        self.description = self.skipped.what  # names the split in errors
        if layout.split_file:
            split_file = self.root / layout.split_file.format(split=disk_split)
            if not split_file.is_file():
                raise DatasetLayoutError(f"missing split file {split_file}; expected this layout:\n{layout.describe()}")
            ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
            image_paths = [
                find_with_suffix(image_dir / sample_id, layout.image_suffix)
                or image_dir / f"{sample_id}{layout.image_suffix}"
                for sample_id in ids
            ]
        else:
            image_paths = []
            for path in list_images(image_dir, layout.recursive, self.skipped):
                if strip_suffix(path.name, layout.image_suffix) is None:
                    self.skipped.add(f"image not named *{layout.image_suffix}", path)
                else:
                    image_paths.append(path)
            ids = [_strip_suffix(p.relative_to(image_dir), layout.image_suffix) for p in image_paths]
        if not ids:
            raise DatasetLayoutError(f"no *{layout.image_suffix} image in {image_dir}; expected:\n{layout.describe()}")
        self.pairs: list[tuple[Path, Path]] = []
        for sample_id, image_path in zip(ids, image_paths, strict=True):
            if not image_path.is_file():
                raise DatasetLayoutError(f"image {image_path} (listed in the split) does not exist")
            mask_path = find_with_suffix(mask_dir / sample_id, layout.mask_suffix)
            if mask_path is None:
                raise DatasetLayoutError(
                    f"image {image_path} has no mask: expected {mask_dir / f'{sample_id}{layout.mask_suffix}'}"
                )
            self.pairs.append((image_path, mask_path))
        if not layout.split_file:  # a split file names a subset of the masks; a listed split pairs them all
            paired = {mask for _, mask in self.pairs}
            masks = list_images(mask_dir, layout.recursive, SkipReport(str(mask_dir)))
            orphans = [m for m in masks if m not in paired and strip_suffix(m.name, layout.mask_suffix) is not None]
            self.skipped.add_all("mask without an image", orphans)
        if skip_corrupt and evaluation:
            keep = decodable_indices(len(self.pairs), self._read, lambda i: self.pairs[i][0], self.skipped)
            if not keep:
                raise DatasetLayoutError(f"every image/mask pair of split {split!r} in {image_dir} is corrupt")
            self.pairs = [self.pairs[i] for i in keep]
            skip_corrupt = False  # dropped above; anything that goes bad later raises
        self.skipped.log()
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

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoded image (EXIF orientation ignored) and raw mask of pair ``index``, checked to have one size."""
        image_path, mask_path = self.pairs[index]
        image = read_rgb(image_path, ignore_orientation=True)
        raw = read_label_map(mask_path)
        check_mask_size(raw, mask_path, image, image_path)
        return image, raw

    def _load(self, index: int) -> dict:
        image, raw = self._read(index)
        mask = self.to_train_ids(raw, self.pairs[index][1])
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {"image": image, "mask": mask}

    def __getitem__(self, index: int) -> dict:
        seed_sample(self, index)  # augmentations keyed on (seed, epoch, index): data/seeding.py
        return self.skipper.load(index, len(self), self._load, lambda i: self.pairs[i][0])

    @property
    def num_skipped(self) -> int:
        return self.skipper.num_skipped
