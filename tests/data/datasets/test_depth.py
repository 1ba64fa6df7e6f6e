"""NYUv2 depth: split files, millimetre PNGs, the valid-depth mask and the Eigen crop."""

import numpy as np
import pytest

from clsvit_lightning.data.datasets.depth import EIGEN_CROP, DepthDataset
from clsvit_lightning.data.io import DatasetLayoutError, LabelError
from tests.data.conftest import random_rgb, write_exif_rotated_jpeg, write_image, write_label


def write_nyu(root, millimetres: np.ndarray, split_file="nyu_test.txt"):
    height, width = millimetres.shape
    write_image(root / "kitchen/rgb_00000.jpg", random_rgb(height, width))
    write_label(root / "kitchen/sync_depth_00000.png", millimetres.astype(np.uint16))
    (root / split_file).write_text("/kitchen/rgb_00000.jpg kitchen/sync_depth_00000.png 518.8579\n\n")


def test_depth_in_metres_and_valid_range(tmp_path):
    write_nyu(tmp_path, np.array([[0, 500, 9999, 12000]]))
    sample = DepthDataset(tmp_path, "nyu_test.txt")[0]
    np.testing.assert_allclose(sample["depth"], [[0.0, 0.5, 9.999, 12.0]], rtol=1e-6)
    # valid: 1e-3 < depth < 10 m
    np.testing.assert_array_equal(sample["valid"], [[False, True, True, False]])


def test_eigen_crop_limits_the_valid_region(tmp_path):
    write_nyu(tmp_path, np.full((480, 640), 2000))
    sample = DepthDataset(tmp_path, "nyu_test.txt", eigen_crop=True)[0]
    top, bottom, left, right = EIGEN_CROP
    assert sample["valid"].sum() == (bottom - top) * (right - left) == 426 * 560
    assert sample["valid"][top, left] and not sample["valid"][top - 1, left] and not sample["valid"][top, right]
    assert sample["image"].shape == (480, 640, 3)  # the image is not cropped


def test_eigen_crop_needs_the_nyu_frame(tmp_path):
    write_nyu(tmp_path, np.full((4, 4), 2000))
    with pytest.raises(LabelError, match="480x640"):
        DepthDataset(tmp_path, "nyu_test.txt", eigen_crop=True)[0]


def test_missing_split_file_and_missing_depth(tmp_path):
    write_nyu(tmp_path, np.full((4, 4), 2000))
    with pytest.raises(DatasetLayoutError, match="(?s)nyu_train.txt.*sync_depth"):
        DepthDataset(tmp_path, "nyu_train.txt")
    (tmp_path / "kitchen/sync_depth_00000.png").unlink()
    with pytest.raises(DatasetLayoutError, match="sync_depth_00000.png .listed in"):
        DepthDataset(tmp_path, "nyu_test.txt")


def test_depth_and_image_size_mismatch(tmp_path):
    write_nyu(tmp_path, np.full((4, 4), 2000))
    write_label(tmp_path / "kitchen/sync_depth_00000.png", np.full((4, 5), 2000, np.uint16))
    with pytest.raises(LabelError, match=r"(?s)sync_depth_00000\.png.*rgb_00000\.jpg"):
        DepthDataset(tmp_path, "nyu_test.txt")[0]


def test_exif_rotated_rgb_is_read_as_stored_and_transposition_is_named(tmp_path):
    write_nyu(tmp_path, np.full((4, 8), 2000))
    write_exif_rotated_jpeg(tmp_path / "kitchen/rgb_00000.jpg", random_rgb(4, 8), 6)
    assert DepthDataset(tmp_path, "nyu_test.txt")[0]["image"].shape == (4, 8, 3)
    write_label(tmp_path / "kitchen/sync_depth_00000.png", np.full((8, 4), 2000, np.uint16))
    with pytest.raises(LabelError, match="height and width swapped"):
        DepthDataset(tmp_path, "nyu_test.txt")[0]


def test_evaluation_set_drops_corrupt_pairs(tmp_path):
    write_nyu(tmp_path, np.full((4, 4), 2000))
    write_image(tmp_path / "kitchen/rgb_00001.jpg", random_rgb(4, 4))
    write_label(tmp_path / "kitchen/sync_depth_00001.png", np.full((4, 4), 3000, np.uint16))
    with (tmp_path / "nyu_test.txt").open("a") as split:
        split.write("kitchen/rgb_00001.jpg kitchen/sync_depth_00001.png\n")
    (tmp_path / "kitchen/sync_depth_00000.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    dataset = DepthDataset(tmp_path, "nyu_test.txt", skip_corrupt=True, evaluation=True)
    assert len(dataset) == 1 and dataset.pairs[0][0].name == "rgb_00001.jpg"
    np.testing.assert_allclose(dataset[0]["depth"], 3.0)
    assert len(DepthDataset(tmp_path, "nyu_test.txt", skip_corrupt=True)) == 2  # training substitutes instead
