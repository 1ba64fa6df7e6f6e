"""Segmentation layouts: ADE20K reduce-zero-label, VOC split files and palette PNGs, Cityscapes train ids, errors."""

import logging

import cv2
import numpy as np
import pytest
from PIL import Image

from clsvit_lightning.data.datasets.segmentation import SegmentationDataset
from clsvit_lightning.data.datasets.segmentation_layouts import SegmentationLayout, get_layout
from clsvit_lightning.data.io import DatasetLayoutError, LabelError
from tests.data.conftest import random_rgb, skip_warnings, write_exif_rotated_jpeg, write_image, write_label


def write_ade(root, split="training", stem="ADE_train_00000001", label=None, image_size=(4, 4)):
    base = root / "ADEChallengeData2016"
    write_image(base / "images" / split / f"{stem}.jpg", random_rgb(*image_size))
    label = np.array([[0, 1, 150, 2]] * 4, np.uint8) if label is None else label
    write_label(base / "annotations" / split / f"{stem}.png", label)


def test_ade20k_reduce_zero_label(tmp_path):
    write_ade(tmp_path)
    dataset = SegmentationDataset(tmp_path, get_layout("ade20k"), "train")
    sample = dataset[0]
    # 0 ("other") -> 255 ignore; k -> k - 1
    np.testing.assert_array_equal(sample["mask"][0], [255, 0, 149, 1])
    assert dataset.num_classes == 150 and sample["image"].shape == (4, 4, 3)


def test_ade20k_label_out_of_range(tmp_path):
    write_ade(tmp_path, label=np.full((4, 4), 151, np.uint8))
    dataset = SegmentationDataset(tmp_path, get_layout("ade20k"), "train")
    with pytest.raises(LabelError, match=r"ADE_train_00000001\.png.*\[151\]"):
        dataset[0]


def test_num_classes_override_narrows_the_range(tmp_path):
    write_ade(tmp_path, label=np.array([[0, 1, 5, 6]] * 4, np.uint8))
    dataset = SegmentationDataset(tmp_path, get_layout("ade20k", num_classes=5), "train")
    with pytest.raises(LabelError, match=r"\[6\]"):
        dataset[0]


def test_mask_size_mismatch_names_both_files(tmp_path):
    write_ade(tmp_path, image_size=(5, 4))
    dataset = SegmentationDataset(tmp_path, get_layout("ade20k"), "train")
    with pytest.raises(LabelError, match=r"(?s)ADE_train_00000001\.png.*ADE_train_00000001\.jpg"):
        dataset[0]


def test_missing_split_and_missing_mask(tmp_path):
    write_ade(tmp_path)
    with pytest.raises(DatasetLayoutError, match="(?s)validation.*ADEChallengeData2016/images"):
        SegmentationDataset(tmp_path, get_layout("ade20k"), "val")
    write_image(tmp_path / "ADEChallengeData2016/images/training/ADE_train_00000002.jpg", random_rgb(4, 4))
    with pytest.raises(DatasetLayoutError, match="ADE_train_00000002.jpg has no mask"):
        SegmentationDataset(tmp_path, get_layout("ade20k"), "train")


def test_voc_split_file_palette_and_border(tmp_path):
    (tmp_path / "SegmentationClass").mkdir()
    for stem in ("2007_000032", "2007_000039"):
        write_image(tmp_path / "JPEGImages" / f"{stem}.jpg", random_rgb(2, 3))
        palette = Image.fromarray(np.array([[0, 20, 255], [15, 255, 1]], np.uint8), mode="P")
        palette.putpalette(list(range(256)) * 3)
        palette.save(tmp_path / "SegmentationClass" / f"{stem}.png")
    (tmp_path / "ImageSets/Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets/Segmentation/val.txt").write_text("2007_000039\n")
    dataset = SegmentationDataset(tmp_path, get_layout("voc2012"), "val")
    assert len(dataset) == 1 and dataset.pairs[0][0].name == "2007_000039.jpg"
    np.testing.assert_array_equal(dataset[0]["mask"], [[0, 20, 255], [15, 255, 1]])  # 255 border kept as ignore
    with pytest.raises(DatasetLayoutError, match="train.txt"):
        SegmentationDataset(tmp_path, get_layout("voc2012"), "train")


def test_cityscapes_label_ids_to_train_ids(tmp_path):
    stem = "aachen_000000_000019"
    write_image(tmp_path / f"leftImg8bit/train/aachen/{stem}_leftImg8bit.png", random_rgb(1, 8))
    label_ids = np.array([[0, 7, 8, 11, 24, 26, 33, 9]], np.uint8)
    write_label(tmp_path / f"gtFine/train/aachen/{stem}_gtFine_labelIds.png", label_ids)
    dataset = SegmentationDataset(tmp_path, get_layout("cityscapes"), "train")
    # cityscapesScripts: unlabeled -> 255, road 0, sidewalk 1, building 2, person 11, car 13, bicycle 18, parking 255
    np.testing.assert_array_equal(dataset[0]["mask"], [[255, 0, 1, 2, 11, 13, 18, 255]])
    write_label(tmp_path / f"gtFine/train/aachen/{stem}_gtFine_labelIds.png", np.full((1, 8), 40, np.uint8))
    with pytest.raises(LabelError, match=r"\[40\]"):
        dataset[0]


def test_generic_folder_layout(tmp_path):
    layout = SegmentationLayout("folder", "img/{split}", "lbl/{split}", ".png", "_mask.png", num_classes=3)
    write_image(tmp_path / "img/train/a.png", random_rgb(2, 2))
    write_label(tmp_path / "lbl/train/a_mask.png", np.array([[0, 1], [2, 255]], np.uint8))
    np.testing.assert_array_equal(SegmentationDataset(tmp_path, layout, "train")[0]["mask"], [[0, 1], [2, 255]])


def test_ade20k_upper_case_and_jpeg_extensions_are_paired(tmp_path, caplog):
    base = tmp_path / "ADEChallengeData2016"
    label = np.array([[0, 1, 150, 2]] * 4, np.uint8)
    for stem, image_suffix, mask_suffix in (("a", ".jpg", ".png"), ("b", ".JPG", ".png"), ("c", ".jpeg", ".PNG")):
        write_image(base / "images/training" / f"{stem}{image_suffix}", random_rgb(4, 4))
        write_label(base / "annotations/training" / f"{stem}{mask_suffix}", label)
    with caplog.at_level(logging.WARNING):
        dataset = SegmentationDataset(tmp_path, get_layout("ade20k"), "train")
    assert [(i.name, m.name) for i, m in dataset.pairs] == [("a.jpg", "a.png"), ("b.JPG", "b.png"), ("c.jpeg", "c.PNG")]
    assert not skip_warnings(caplog)  # no mask orphaned, nothing left out
    np.testing.assert_array_equal(dataset[1]["mask"][0], [255, 0, 149, 1])


def test_voc_split_file_finds_upper_case_jpg(tmp_path):
    write_image(tmp_path / "JPEGImages/2007_000032.JPG", random_rgb(2, 3))
    write_label(tmp_path / "SegmentationClass/2007_000032.png", np.zeros((2, 3), np.uint8))
    (tmp_path / "ImageSets/Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets/Segmentation/train.txt").write_text("2007_000032\n")
    dataset = SegmentationDataset(tmp_path, get_layout("voc2012"), "train")
    assert dataset.pairs[0][0].name == "2007_000032.JPG" and dataset[0]["image"].shape == (2, 3, 3)


def test_left_out_files_and_orphan_masks_are_reported_once(tmp_path, caplog):
    write_ade(tmp_path)
    base = tmp_path / "ADEChallengeData2016"
    write_label(base / "annotations/training/ADE_train_00000009.png", np.zeros((4, 4), np.uint8))  # no image
    write_image(base / "images/training/extra.png", random_rgb(4, 4))  # not *.jpg
    (base / "images/training/gone.jpg").symlink_to(base / "nowhere.jpg")
    write_image(base / "images/training/nested/ADE_train_00000002.jpg", random_rgb(4, 4))  # ADE20K is flat
    with caplog.at_level(logging.WARNING):
        dataset = SegmentationDataset(tmp_path, get_layout("ade20k"), "train")
    assert len(dataset) == 1
    (line,) = skip_warnings(caplog)
    assert "ade20k split 'train'" in line and "skipped 4" in line
    for text in ("1 broken symlink", "gone.jpg", "1 image not named *.jpg", "extra.png", "1 mask without an image",
                 "ADE_train_00000009.png", "1 sub-folder (not searched)", "nested"):  # fmt: skip
        assert text in line


def test_jpeg_compressed_mask_named_png_is_an_error(tmp_path):
    write_ade(tmp_path)
    mask = tmp_path / "ADEChallengeData2016/annotations/training/ADE_train_00000001.png"
    ok, encoded = cv2.imencode(".jpg", np.array([[0, 1, 150, 2]] * 4, np.uint8))  # values in range: passes today
    encoded.tofile(mask)
    dataset = SegmentationDataset(tmp_path, get_layout("ade20k"), "train", skip_corrupt=True)
    with pytest.raises(LabelError, match=r"ADE_train_00000001\.png is a JPEG"):
        dataset[0]


def test_exif_rotated_image_is_read_as_stored_to_match_its_mask(tmp_path):
    write_ade(tmp_path, label=np.ones((4, 8), np.uint8))
    image = random_rgb(4, 8)
    write_exif_rotated_jpeg(tmp_path / "ADEChallengeData2016/images/training/ADE_train_00000001.jpg", image, 6)
    sample = SegmentationDataset(tmp_path, get_layout("ade20k"), "train")[0]
    assert sample["image"].shape == (4, 8, 3) and sample["mask"].shape == (4, 8)


def test_transposed_mask_says_height_and_width_are_swapped(tmp_path):
    write_ade(tmp_path, label=np.ones((8, 4), np.uint8), image_size=(4, 8))
    dataset = SegmentationDataset(tmp_path, get_layout("ade20k"), "train")
    with pytest.raises(LabelError, match=r"(?s)4x8 \(WxH\) but image .*8x4.*height and width swapped"):
        dataset[0]
    write_ade(tmp_path, label=np.ones((5, 4), np.uint8), image_size=(4, 8))  # a plain mismatch: no such hint
    with pytest.raises(LabelError) as error:
        dataset[0]
    assert "swapped" not in str(error.value)


def test_evaluation_set_drops_corrupt_pairs(tmp_path, caplog):
    write_ade(tmp_path, split="validation", stem="ADE_val_1")
    write_ade(tmp_path, split="validation", stem="ADE_val_2")
    bad = tmp_path / "ADEChallengeData2016/images/validation/ADE_val_1.jpg"
    bad.write_bytes(bad.read_bytes()[:30])
    with caplog.at_level(logging.WARNING):
        evaluation = SegmentationDataset(tmp_path, get_layout("ade20k"), "val", skip_corrupt=True, evaluation=True)
    assert [image.name for image, _ in evaluation.pairs] == ["ADE_val_2.jpg"]
    assert "ADE_val_1.jpg" in skip_warnings(caplog)[0]
    training = SegmentationDataset(tmp_path, get_layout("ade20k"), "val", skip_corrupt=True)
    assert len(training) == 2  # training substitutes the next pair at load time
