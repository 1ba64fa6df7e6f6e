"""ImageFolder layout: sorted classes, subset files, and the errors for each kind of bad input."""

import logging

import numpy as np
import pytest

from clsvit_lightning.data.datasets.imagenet import ImageFolderDataset
from clsvit_lightning.data.io import CorruptImageError, DatasetLayoutError
from tests.data.conftest import random_rgb, write_image


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
