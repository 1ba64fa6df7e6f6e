"""On-disk layouts of the segmentation datasets, and how their stored labels map to training ids.

Presets: ``ade20k`` (``ADEChallengeData2016``, reduce-zero-label, 150 classes), ``voc2012``
(``VOCdevkit/VOC2012``, 21 classes, 255 = border), ``cityscapes`` (``gtFine`` labelIds -> 19 train ids).
``folder`` describes any other dataset with the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

IGNORE_INDEX = 255

# cityscapesScripts ``labels.py``: labelId -> trainId for the 19 evaluated classes; every other id is ignored.
CITYSCAPES_LABEL_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CITYSCAPES_NUM_LABEL_IDS = 34  # labelIds 0..33 are valid in *_labelIds.png


@dataclass(frozen=True)
class SegmentationLayout:
    """Where images and masks live (``{split}`` is replaced by the on-disk split name) and how labels read.

    Masks pair with images by relative path: ``<image_dir>/a/b<image_suffix>`` <->
    ``<mask_dir>/a/b<mask_suffix>``. With ``split_file`` the sample ids come from that file (one id
    per line, relative to the dirs, without suffix) instead of listing ``image_dir``.

    Labels: with ``label_map`` raw ids in the map become their value and other ids below
    ``num_raw_labels`` become ``ignore_index``; with ``reduce_zero_label`` raw 0 becomes ignore and
    ``1..num_classes`` become ``0..num_classes-1``; otherwise ``0..num_classes-1`` are kept. The raw
    ``ignore_index`` is always ignore; any other value is an error naming the file.
    """

    name: str
    image_dir: str
    mask_dir: str
    image_suffix: str
    mask_suffix: str
    num_classes: int
    split_names: dict[str, str] = field(default_factory=dict)
    split_file: str | None = None
    recursive: bool = False
    reduce_zero_label: bool = False
    label_map: dict[int, int] | None = None
    num_raw_labels: int | None = None
    ignore_index: int = IGNORE_INDEX

    def describe(self) -> str:
        lines = [
            f"{self.name} layout:",
            f"  ROOT/{self.image_dir}/{'**/' if self.recursive else ''}*{self.image_suffix}",
        ]
        lines.append(f"  ROOT/{self.mask_dir}/{'**/' if self.recursive else ''}*{self.mask_suffix}")
        if self.split_file:
            lines.append(f"  ROOT/{self.split_file}  (one sample id per line)")
        if self.split_names:
            lines.append(f"  splits: {self.split_names}")
        return "\n".join(lines)

    def on_disk_split(self, split: str) -> str:
        return self.split_names.get(split, split)

    def label_tables(self, max_raw: int) -> tuple[np.ndarray, np.ndarray]:
        """``(to_train_id, is_valid)`` lookup tables over raw values ``0..max_raw``."""
        raw = np.arange(max_raw + 1)
        to_train_id = np.full(max_raw + 1, self.ignore_index, dtype=np.uint8)
        is_valid = raw == self.ignore_index
        if self.label_map is not None:
            is_valid |= raw < (self.num_raw_labels or max(self.label_map) + 1)
            for raw_id, train_id in self.label_map.items():
                to_train_id[raw_id] = train_id
        elif self.reduce_zero_label:
            is_valid |= raw <= self.num_classes
            to_train_id[1 : self.num_classes + 1] = np.arange(self.num_classes)
        else:
            is_valid |= raw < self.num_classes
            to_train_id[: self.num_classes] = np.arange(self.num_classes)
        return to_train_id, is_valid


PRESETS: dict[str, SegmentationLayout] = {
    "ade20k": SegmentationLayout(
        name="ade20k",
        image_dir="ADEChallengeData2016/images/{split}",
        mask_dir="ADEChallengeData2016/annotations/{split}",
        image_suffix=".jpg",
        mask_suffix=".png",
        num_classes=150,
        split_names={"train": "training", "val": "validation"},
        reduce_zero_label=True,
    ),
    "voc2012": SegmentationLayout(
        name="voc2012",
        image_dir="JPEGImages",
        mask_dir="SegmentationClass",
        image_suffix=".jpg",
        mask_suffix=".png",
        num_classes=21,
        split_file="ImageSets/Segmentation/{split}.txt",
    ),
    "cityscapes": SegmentationLayout(
        name="cityscapes",
        image_dir="leftImg8bit/{split}",
        mask_dir="gtFine/{split}",
        image_suffix="_leftImg8bit.png",
        mask_suffix="_gtFine_labelIds.png",
        num_classes=19,
        recursive=True,
        label_map=CITYSCAPES_LABEL_TO_TRAIN_ID,
        num_raw_labels=CITYSCAPES_NUM_LABEL_IDS,
    ),
}


def get_layout(name: str, **overrides) -> SegmentationLayout:
    """A preset by name, with fields replaced by the non-None ``overrides`` (e.g. ``num_classes``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown segmentation dataset {name!r}; expected one of {sorted(PRESETS)} or 'folder'")
    return replace(PRESETS[name], **{key: value for key, value in overrides.items() if value is not None})
