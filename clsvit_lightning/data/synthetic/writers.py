"""Write synthetic scenes in the ImageNet ImageFolder and the ADE20K layouts, so the real loaders read them.

::

    OUT/imagenet/{train,val}/<class folder>/*.JPEG      + synth_info.json
    OUT/ade20k/ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_%08d.jpg
    OUT/ade20k/ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_%08d.png
                                                          + OUT/ade20k/synth_info.json

Both layouts hold the same scenes (each scene is drawn once and written to both). In the ADE20K
layout the segmentation classes after reduce-zero-label are ``0`` = background and ``1 + c`` = object
class ``c``: read it with ``SegmentationDataModule(dataset="ade20k", num_classes=K + 1)``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np

from clsvit_lightning.data.synthetic.scenes import class_name, make_scene

SPLITS = {"train": ("train", "training"), "val": ("val", "validation")}  # split -> (ImageNet, ADE20K) names
KINDS = ("imagenet", "ade20k")
JPEG_QUALITY = 90


def class_folders(num_classes: int) -> list[str]:
    """Folder names whose sorted order is the class order (like WordNet ids, but readable)."""
    return [f"c{index:03d}_{class_name(index)}" for index in range(num_classes)]


def _write(path: Path, array: np.ndarray, params: list[int]) -> None:
    ok, encoded = cv2.imencode(path.suffix, array, params)
    if not ok:
        raise OSError(f"could not encode {path}")
    encoded.tofile(path)


def write_synthetic(
    out: str | Path,
    kinds: tuple[str, ...] = KINDS,
    num_train: int = 2000,
    num_val: int = 200,
    num_classes: int = 10,
    size_range: tuple[int, int] = (64, 96),
    seed: int = 0,
) -> dict[str, object]:
    """Generate ``num_train`` + ``num_val`` scenes and write them in each of ``kinds``; return a summary."""
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds={kinds}; expected a non-empty subset of {KINDS}")
    if not 2 <= num_classes <= 100:
        raise ValueError(f"num_classes={num_classes}; expected 2..100")
    out = Path(out)
    start = time.perf_counter()
    folders = class_folders(num_classes)
    imagenet_root, ade_root = out / "imagenet", out / "ade20k" / "ADEChallengeData2016"
    for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        imagenet_split, ade_split = SPLITS[split]
        if "imagenet" in kinds:
            for folder in folders:
                (imagenet_root / imagenet_split / folder).mkdir(parents=True, exist_ok=True)
        if "ade20k" in kinds:
            (ade_root / "images" / ade_split).mkdir(parents=True, exist_ok=True)
            (ade_root / "annotations" / ade_split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            rng = np.random.default_rng([seed, split_index, index])
            scene = make_scene(num_classes, index % num_classes, rng, size_range)
            bgr = cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR)
            jpeg = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
            if "imagenet" in kinds:
                folder = folders[scene.label]
                name = f"{folder}_{index}.JPEG" if split == "train" else f"ILSVRC2012_val_{index + 1:08d}.JPEG"
                _write(imagenet_root / imagenet_split / folder / name, bgr, jpeg)
            if "ade20k" in kinds:
                stem = f"ADE_{split}_{index + 1:08d}"
                _write(ade_root / "images" / ade_split / f"{stem}.jpg", bgr, jpeg)
                _write(ade_root / "annotations" / ade_split / f"{stem}.png", scene.annotation, [])
    info = {
        "generator": "clsvit_lightning.data.synthetic",
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "size_range": list(size_range),
        "num_classes": num_classes,
        "classes": folders,
    }
    if "imagenet" in kinds:
        (imagenet_root / "synth_info.json").write_text(json.dumps(info, indent=2))
    if "ade20k" in kinds:
        segmentation_classes = ["background", *folders]
        ade_info = {**info, "num_segmentation_classes": num_classes + 1, "segmentation_classes": segmentation_classes}
        (ade_root.parent / "synth_info.json").write_text(json.dumps(ade_info, indent=2))
    return {**info, "kinds": list(kinds), "out": str(out), "seconds": round(time.perf_counter() - start, 2)}
