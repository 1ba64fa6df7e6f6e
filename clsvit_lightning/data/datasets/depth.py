"""NYU Depth v2 as RGB images + 16-bit depth PNGs in millimetres, listed by split files.

Layout (the BTS / Monocular-Depth-Estimation-Toolbox export the DINOv2 depth evals read)::

    ROOT/
      nyu_train.txt   # one sample per line: "<rgb path> <depth path> [focal]", paths relative to ROOT
      nyu_test.txt
      <any folders>/rgb_00000.jpg
      <any folders>/sync_depth_00000.png   # uint16, depth in mm (depth_scale=1000), 0 = no measurement

Valid depth: ``min_depth < depth < max_depth`` (NYU eval: 1e-3 and 10 m). ``eigen_crop`` further
restricts the valid mask to rows 45:471 and columns 41:601 of the 480x640 frame (Eigen et al. 2014),
the region every NYUv2 number since is computed on; the image itself is not cropped. Images are
decoded as stored (EXIF orientation ignored: the depth maps carry none).
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
from torch.utils.data import Dataset

from clsvit_lightning.data.datasets.base import CorruptSkipper, decodable_indices
from clsvit_lightning.data.io import (
    DatasetLayoutError,
    LabelError,
    SkipReport,
    check_mask_size,
    read_depth_png,
    read_rgb,
    require_dir,
)
from clsvit_lightning.data.seeding import seed_sample

NYU_LAYOUT = """ROOT/
  nyu_train.txt, nyu_test.txt   # lines "<rgb path> <depth path> [focal]", relative to ROOT
  <folders>/rgb_*.jpg
  <folders>/sync_depth_*.png    # uint16 millimetres, 0 = no measurement"""
EIGEN_CROP = (45, 471, 41, 601)  # top, bottom, left, right in the 480 x 640 NYUv2 frame
NYU_FRAME = (480, 640)


def read_split_file(path: Path) -> list[tuple[str, str]]:
    """``(rgb, depth)`` relative paths from a split file; the optional third column (focal) is ignored."""
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise DatasetLayoutError(f"{path}:{number}: expected '<rgb path> <depth path> [focal]', got {line!r}")
        pairs.append((fields[0].lstrip("/"), fields[1].lstrip("/")))
    return pairs


class DepthDataset(Dataset):
    """Samples ``{"image": [H, W, 3] uint8, "depth": [H, W] float32 metres, "valid": [H, W] bool}``.

    ``transform`` is an albumentations ``Compose`` with ``additional_targets={"valid": "mask"}``
    called as ``transform(image=..., mask=depth, valid=...)``. ``skip_corrupt``: a training set
    (``evaluation=False``) substitutes the next pair for a corrupt one; an evaluation set decodes every
    pair once here and drops the corrupt ones (``datasets/base.py``).
    """

    def __init__(
        self,
        root: str | Path,
        split_file: str = "nyu_train.txt",
        transform: A.BaseCompose | None = None,
        depth_scale: float = 1000.0,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        eigen_crop: bool = False,
        skip_corrupt: bool = False,
        evaluation: bool = False,
    ) -> None:
        self.root = require_dir(Path(root), NYU_LAYOUT)
        split_path = self.root / split_file
        if not split_path.is_file():
            raise DatasetLayoutError(f"missing split file {split_path}; expected this layout:\n{NYU_LAYOUT}")
        self.pairs = [(self.root / rgb, self.root / depth) for rgb, depth in read_split_file(split_path)]
        if not self.pairs:
            raise DatasetLayoutError(f"split file {split_path} lists no sample")
        for rgb_path, depth_path in self.pairs:
            for path in (rgb_path, depth_path):
                if not path.is_file():
                    raise DatasetLayoutError(f"{path} (listed in {split_path}) does not exist")
        self.transform = transform
        self.depth_scale = depth_scale
        self.min_depth, self.max_depth = min_depth, max_depth
        self.eigen_crop = eigen_crop
        self.skipped = SkipReport(f"NYU depth split {split_path}")
        self.description = self.skipped.what  # names the split in errors
        if skip_corrupt and evaluation:
            keep = decodable_indices(len(self.pairs), self._read, lambda i: self.pairs[i][0], self.skipped)
            if not keep:
                raise DatasetLayoutError(f"every image/depth pair listed in {split_path} is corrupt")
            self.pairs = [self.pairs[i] for i in keep]
            skip_corrupt = False  # dropped above; anything that goes bad later raises
        self.skipped.log()
        self.skipper = CorruptSkipper(skip_corrupt)

    def __len__(self) -> int:
        return len(self.pairs)

    def valid_mask(self, depth: np.ndarray, path: Path) -> np.ndarray:
        valid = (depth > self.min_depth) & (depth < self.max_depth)
        if self.eigen_crop:
            if depth.shape != NYU_FRAME:
                raise LabelError(f"eigen_crop needs the 480x640 NYUv2 frame; depth map {path} is {depth.shape}")
            top, bottom, left, right = EIGEN_CROP
            region = np.zeros_like(valid)
            region[top:bottom, left:right] = True
            valid &= region
        return valid

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rgb_path, depth_path = self.pairs[index]
        image = read_rgb(rgb_path, ignore_orientation=True)
        depth = read_depth_png(depth_path, self.depth_scale)
        check_mask_size(depth, depth_path, image, rgb_path, "depth map")
        return image, depth

    def _load(self, index: int) -> dict:
        image, depth = self._read(index)
        depth_path = self.pairs[index][1]
        valid = self.valid_mask(depth, depth_path)
        if self.transform is not None:
            out = self.transform(image=image, mask=depth, valid=valid.view(np.uint8))
            image, depth, valid = out["image"], out["mask"], out["valid"].astype(bool)
        return {"image": image, "depth": depth, "valid": valid}

    def __getitem__(self, index: int) -> dict:
        seed_sample(self, index)  # augmentations keyed on (seed, epoch, index): data/seeding.py
        return self.skipper.load(index, len(self), self._load, lambda i: self.pairs[i][0])
