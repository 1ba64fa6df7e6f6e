"""ImageNet in the ImageFolder layout (as ILSVRC-2012 is usually unpacked, one folder per class).

Labels are the indices of the sorted class-folder names (the standard ``n01440764`` -> 0 order).
A class-subset file (one folder name per line, ``#`` comments allowed) keeps only those classes,
re-indexed in sorted order: ImageNet-100-style studies.

Images in sub-folders of a class folder belong to that class (searched recursively, as
torchvision's ``ImageFolder`` and ImageNet-21k-style trees have it). Image extensions match in
any case (``.JPEG``, ``.jpg``, ``.PNG``...). What a split leaves out (broken symlinks, non-image
files, files beside the class folders, corrupt files dropped from an evaluation set) is counted
and logged as one warning per split, with one example path per reason.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from clsvit_lightning.data.datasets.base import CorruptSkipper, ImageTransform, apply_image_transform, decodable_indices
from clsvit_lightning.data.io import DatasetLayoutError, SkipReport, list_images, read_rgb, require_dir
from clsvit_lightning.data.seeding import SampleIndex, seed_sample

IMAGENET_LAYOUT = """ROOT/
  train/<class folder, e.g. n01440764>/[<sub-folders>/]*.JPEG
  val/<class folder>/[<sub-folders>/]*.JPEG   (ILSVRC2012's flat val/ must first be sorted into class folders)"""


def read_class_subset(path: str | Path) -> list[str]:
    """Folder names listed in ``path``, one per line (blank lines and ``#`` comments ignored), sorted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class_subset_file {path} does not exist; expected one class folder name per line")
    names = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    names = [name for name in names if name]
    if not names:
        raise ValueError(f"class_subset_file {path} lists no class")
    if len(set(names)) != len(names):
        raise ValueError(f"class_subset_file {path} lists a class more than once")
    return sorted(names)


def _flat_split_error(split_dir: Path, num_images: int) -> DatasetLayoutError:
    return DatasetLayoutError(
        f"{split_dir} holds {num_images} images directly but no class folders (ILSVRC2012's val/ comes flat "
        f"like this): sort the images into one folder per class first; expected this layout:\n{IMAGENET_LAYOUT}"
    )


class ImageFolderDataset(Dataset):
    """``ROOT/<split>/<class>/<image>``: samples are ``transform(image) | {"label": class index}``.

    ``classes`` fixes the class list (the DataModule passes the train split's list to ``val`` so that
    indices agree); otherwise it is the sorted folder names of the split, or the subset file's.
    ``skip_corrupt``: a training set (``evaluation=False``) substitutes the next sample for a corrupt
    one; an evaluation set decodes every file once here and drops the corrupt ones (``datasets/base.py``).
    ``skipped`` holds what the split left out, by reason.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: ImageTransform | None = None,
        classes: list[str] | None = None,
        class_subset_file: str | Path | None = None,
        skip_corrupt: bool = False,
        evaluation: bool = False,
    ) -> None:
        self.root = Path(root)
        require_dir(self.root, IMAGENET_LAYOUT)
        split_dir = require_dir(self.root / split, IMAGENET_LAYOUT)
        self.skipped = SkipReport(f"ImageFolder split {split!r} ({split_dir})")
        self.description = self.skipped.what  # names the split in errors
        loose = SkipReport(str(split_dir))
        loose_images = list_images(split_dir, skipped=loose)  # files beside the class folders
        if classes is None:
            classes = read_class_subset(class_subset_file) if class_subset_file else None
        if classes is None:
            classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
            if not classes:
                if loose_images:
                    raise _flat_split_error(split_dir, len(loose_images))
                raise DatasetLayoutError(f"{split_dir} has no class folders; expected this layout:\n{IMAGENET_LAYOUT}")
        self.classes = list(classes)
        self.class_to_index = {name: index for index, name in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        for name in self.classes:
            class_dir = split_dir / name
            if not class_dir.is_dir():
                if loose_images and not any(p.is_dir() for p in split_dir.iterdir()):
                    raise _flat_split_error(split_dir, len(loose_images))
                raise DatasetLayoutError(f"class folder {class_dir} is missing (class {name!r} of split {split!r})")
            images = list_images(class_dir, recursive=True, skipped=self.skipped)
            if not images:
                raise DatasetLayoutError(f"class folder {class_dir} contains no image (.jpg/.jpeg/.png/...)")
            self.samples += [(path, self.class_to_index[name]) for path in images]
        self.skipped.add_all("file beside the class folders", loose_images)
        for reason, count in loose.counts.items():
            if reason != "sub-folder (not searched)":  # the class folders (and any outside the class list)
                self.skipped.add(f"{reason}, beside the class folders", loose.examples[reason], count)
        if skip_corrupt and evaluation:
            keep = decodable_indices(len(self.samples), self._check, lambda i: self.samples[i][0], self.skipped)
            if not keep:
                raise DatasetLayoutError(f"every image of split {split!r} in {split_dir} is corrupt")
            self.samples = [self.samples[i] for i in keep]
            skip_corrupt = False  # dropped above; anything that goes bad later raises
        self.skipped.log()
        self.split = split
        self.transform = transform
        self.skipper = CorruptSkipper(skip_corrupt)

    def __len__(self) -> int:
        return len(self.samples)

    def _check(self, index: int) -> None:
        read_rgb(self.samples[index][0])

    def _load(self, index: int) -> dict:
        path, label = self.samples[index]
        sample = apply_image_transform(self.transform, read_rgb(path))
        sample["label"] = label
        return sample

    def __getitem__(self, index: int) -> dict:
        seed_sample(self, index)  # augmentations keyed on (seed, epoch, index): data/seeding.py
        sample = self.skipper.load(index, len(self), self._load, lambda i: self.samples[i][0])
        if isinstance(index, SampleIndex) and "global_crops" in sample:
            sample["sample_key"] = index.key  # the multi-crop collate keys the batch's iBOT masks on it
        return sample

    @property
    def num_skipped(self) -> int:
        return self.skipper.num_skipped
