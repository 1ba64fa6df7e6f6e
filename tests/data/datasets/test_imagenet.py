"""ImageFolder layout: sorted classes, subset files, and the errors for each kind of bad input."""

import logging

import numpy as np
import pytest

from clsvit_lightning.data.datasets.imagenet import ImageFolderDataset
from clsvit_lightning.data.io import CorruptImageError, DatasetLayoutError, read_rgb
from tests.data.conftest import random_rgb, skip_warnings, write_image


@pytest.fixture
def imagenet_root(tmp_path):
    # Created out of order on purpose: labels must follow the sorted folder names.
    for wnid, count in (("n02", 2), ("n01", 3), ("n03", 1)):
        for split in ("train", "val"):
            for index in range(count):
                write_image(tmp_path / split / wnid / f"{wnid}_{index}.JPEG", random_rgb(10, 12, seed=index))
    return tmp_path


def test_labels_follow_sorted_folders(imagenet_root):
    dataset = ImageFolderDataset(imagenet_root, "train")
    assert dataset.classes == ["n01", "n02", "n03"]
    assert len(dataset) == 6
    assert [label for _, label in dataset.samples] == [0, 0, 0, 1, 1, 2]
    sample = dataset[4]
    assert sample["label"] == 1 and sample["image"].shape == (10, 12, 3)


def test_class_subset_file_keeps_and_reindexes(imagenet_root, tmp_path):
    subset = tmp_path / "subset.txt"
    subset.write_text("# ImageNet-2\nn03\n\nn01  # comment\n")
    dataset = ImageFolderDataset(imagenet_root, "val", class_subset_file=subset)
    assert dataset.classes == ["n01", "n03"]
    assert sorted({label for _, label in dataset.samples}) == [0, 1] and len(dataset) == 4


def test_missing_root_and_split_name_the_layout(tmp_path, imagenet_root):
    with pytest.raises(DatasetLayoutError, match=r"(?s)missing folder .*nowhere.*train/<class folder"):
        ImageFolderDataset(tmp_path / "nowhere", "train")
    with pytest.raises(DatasetLayoutError, match="missing folder .*test"):
        ImageFolderDataset(imagenet_root, "test")


def test_empty_class_folder_is_an_error(imagenet_root):
    (imagenet_root / "train" / "n04").mkdir()
    with pytest.raises(DatasetLayoutError, match="n04 contains no image"):
        ImageFolderDataset(imagenet_root, "train")


def test_subset_class_missing_from_split(imagenet_root, tmp_path):
    subset = tmp_path / "subset.txt"
    subset.write_text("n01\nn09\n")
    with pytest.raises(DatasetLayoutError, match="n09 is missing"):
        ImageFolderDataset(imagenet_root, "train", class_subset_file=subset)


def test_corrupt_image_raises_with_path_or_is_skipped_and_counted(imagenet_root, caplog):
    bad = imagenet_root / "train" / "n01" / "n01_1.JPEG"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    strict = ImageFolderDataset(imagenet_root, "train")
    with pytest.raises(CorruptImageError, match=r"n01_1\.JPEG.*skip_corrupt"):
        strict[1]
    lenient = ImageFolderDataset(imagenet_root, "train", skip_corrupt=True)
    with caplog.at_level(logging.WARNING):
        sample = lenient[1]
    # The next sample (index 2, n01_2) replaces it; the skip is logged with the path and counted.
    np.testing.assert_array_equal(sample["image"], lenient[2]["image"])
    assert lenient.num_skipped == 1 and "n01_1.JPEG" in caplog.text


def test_nested_class_subfolders_are_searched_any_extension_case(imagenet_root):
    # ImageNet-21k-style trees: images below a class folder belong to that class, however deep.
    write_image(imagenet_root / "train" / "n03" / "sub" / "deeper" / "a.JPG", random_rgb(10, 12))
    write_image(imagenet_root / "train" / "n03" / "sub" / "b.jpeg", random_rgb(10, 12))
    write_image(imagenet_root / "train" / "n03" / "c.PNG", random_rgb(10, 12))
    dataset = ImageFolderDataset(imagenet_root, "train")
    n03 = sorted(
        path.relative_to(imagenet_root / "train" / "n03").as_posix() for path, label in dataset.samples if label == 2
    )
    assert n03 == ["c.PNG", "n03_0.JPEG", "sub/b.jpeg", "sub/deeper/a.JPG"]
    assert dataset[len(dataset) - 1]["label"] == 2


def test_skipped_files_are_counted_and_reported_once_per_split(imagenet_root, caplog):
    (imagenet_root / "train" / "n01" / "lost.JPEG").symlink_to(imagenet_root / "nowhere.JPEG")
    (imagenet_root / "train" / "n02" / "lost.JPEG").symlink_to(imagenet_root / "nowhere.JPEG")
    (imagenet_root / "train" / "n02" / "notes.txt").write_text("not an image")
    write_image(imagenet_root / "train" / "stray.JPEG", random_rgb(10, 12))
    with caplog.at_level(logging.WARNING):
        dataset = ImageFolderDataset(imagenet_root, "train")
        ImageFolderDataset(imagenet_root, "val")  # nothing left out: no line
    assert len(dataset) == 6
    assert dataset.skipped.counts["broken symlink"] == 2
    (line,) = skip_warnings(caplog)
    assert "'train'" in line and "skipped 4" in line
    assert f"2 broken symlink (e.g. {imagenet_root / 'train' / 'n01' / 'lost.JPEG'})" in line
    assert "1 not an image" in line and "notes.txt" in line
    assert "1 file beside the class folders" in line and "stray.JPEG" in line


def test_flat_val_is_named_as_such(imagenet_root):
    # ILSVRC2012's val/ as extracted: 50k images with no class folders.
    for path in list((imagenet_root / "val").glob("*/*")):
        path.rename(imagenet_root / "val" / path.name)
        path.parent.rmdir() if not any(path.parent.iterdir()) else None
    for given in (None, ["n01", "n02", "n03"]):
        with pytest.raises(DatasetLayoutError, match=r"(?s)val holds 6 images directly but no class folders.*sort"):
            ImageFolderDataset(imagenet_root, "val", classes=given)


def test_evaluation_drops_corrupt_images_instead_of_duplicating(imagenet_root, caplog):
    bad = imagenet_root / "val" / "n01" / "n01_1.JPEG"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    with caplog.at_level(logging.WARNING):
        dataset = ImageFolderDataset(imagenet_root, "val", skip_corrupt=True, evaluation=True)
    assert len(dataset) == 5 and bad not in [path for path, _ in dataset.samples]
    paths = [path for path, _ in dataset.samples]
    assert len(set(paths)) == 5  # every sample once, none twice
    for index, path in enumerate(paths):
        np.testing.assert_array_equal(dataset[index]["image"], read_rgb(path))
    assert dataset.skipped.counts == {"corrupt (cannot decode; dropped from this evaluation set)": 1}
    (line,) = skip_warnings(caplog)
    assert "n01_1.JPEG" in line
    # A training set still substitutes (an epoch keeps its length).
    assert len(ImageFolderDataset(imagenet_root, "val", skip_corrupt=True)) == 6
