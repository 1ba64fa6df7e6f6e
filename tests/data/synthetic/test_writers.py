"""The synthetic sets are written in the real layouts and read back by the real datasets; `clsvit synth`."""

import json

import numpy as np
import pytest

from clsvit_lightning.cli import run
from clsvit_lightning.data.datasets.imagenet import ImageFolderDataset
from clsvit_lightning.data.datasets.segmentation import SegmentationDataset
from clsvit_lightning.data.datasets.segmentation_layouts import get_layout
from clsvit_lightning.data.synthetic.writers import write_synthetic


def test_both_layouts_hold_the_same_scenes(synthetic_root):
    imagenet = ImageFolderDataset(synthetic_root / "imagenet", "train")
    ade = SegmentationDataset(synthetic_root / "ade20k", get_layout("ade20k", num_classes=5), "train")
    info = json.loads((synthetic_root / "imagenet" / "synth_info.json").read_text())
    assert imagenet.classes == info["classes"] and len(imagenet) == 24 and len(ade) == 24
    assert sorted(p.name for p in (synthetic_root / "imagenet/val").iterdir() if p.is_dir()) == info["classes"]
    # Scene i: ImageNet label == most frequent object class of its ADE20K mask (train id 1 + c).
    by_name = {path.name: label for path, label in imagenet.samples}
    for index in (0, 5, 17):
        mask = ade[index]["mask"]
        counts = np.bincount(mask[(mask != 255) & (mask > 0)].ravel() - 1, minlength=4)
        folder = info["classes"][int(np.argmax(counts))]
        assert by_name[f"{folder}_{index}.JPEG"] == int(np.argmax(counts))
        # the same JPEG bytes in both layouts
        ade_jpeg = synthetic_root / f"ade20k/ADEChallengeData2016/images/training/ADE_train_{index + 1:08d}.jpg"
        imagenet_jpeg = synthetic_root / f"imagenet/train/{folder}/{folder}_{index}.JPEG"
        assert ade_jpeg.read_bytes() == imagenet_jpeg.read_bytes()


def test_generation_is_deterministic(tmp_path):
    for name in ("a", "b"):
        write_synthetic(
            tmp_path / name, ("ade20k",), num_train=3, num_val=1, num_classes=3, size_range=(32, 40), seed=9
        )
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*") if p.suffix != ".json")
    assert len(files_a) == 8
    for relative in files_a:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()


def test_bad_arguments():
    with pytest.raises(ValueError, match="kinds"):
        write_synthetic("/tmp/unused", ("coco",))
    with pytest.raises(ValueError, match="num_classes"):
        write_synthetic("/tmp/unused", num_classes=1)


def test_clsvit_synth_command(tmp_path, capsys):
    summary = run(["synth", "--out", str(tmp_path), "--kind", "imagenet", "--num_train", "6", "--num_val", "3",
                   "--num_classes", "3", "--size_range", "[32, 40]"])  # fmt: skip
    assert summary["kinds"] == ["imagenet"] and not (tmp_path / "ade20k").exists()
    assert len(ImageFolderDataset(tmp_path / "imagenet", "train")) == 6
    assert json.loads(capsys.readouterr().out)["num_train"] == 6
    with pytest.raises(SystemExit):
        run(["synth", "--out", str(tmp_path), "--size_range", "[40, 32]"])
