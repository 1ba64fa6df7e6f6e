import cv2
import numpy as np
import pytest
from PIL import Image

from clsvit_lightning.data.io import CorruptImageError, LabelError, read_depth_png, read_label_map, read_rgb
from tests.data.conftest import random_rgb, write_image, write_label


def test_read_rgb_returns_rgb_channel_order(tmp_path):
    pure_red = np.zeros((4, 5, 3), np.uint8)
    pure_red[..., 0] = 255
    image = read_rgb(write_image(tmp_path / "red.png", pure_red))  # stored as BGR by OpenCV
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, pure_red)


def test_grayscale_jpeg_becomes_three_channels(tmp_path):
    gray = np.full((6, 6), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "gray.jpg"), gray)
    image = read_rgb(tmp_path / "gray.jpg")
    assert image.shape == (6, 6, 3)
    assert np.abs(image.astype(int) - 77).max() <= 1


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_image_error_names_the_file(tmp_path, suffix):
    path = write_image(tmp_path / f"cut{suffix}", random_rgb(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptImageError, match=str(path)):
        read_rgb(path)


def test_non_image_and_empty_file_raise(tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    for name in ("notes.jpg", "empty.jpg"):
        with pytest.raises(CorruptImageError, match=name):
            read_rgb(tmp_path / name)


def test_palette_png_reads_indices_not_colours(tmp_path):
    indices = np.array([[0, 1], [2, 255]], np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    image.save(tmp_path / "voc.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "voc.png"), indices)


def test_rgb_label_png_is_rejected(tmp_path):
    write_image(tmp_path / "colour.png", random_rgb(3, 3))
    with pytest.raises(LabelError, match="single-channel"):
        read_label_map(tmp_path / "colour.png")


def test_depth_png_millimetres_to_metres(tmp_path):
    millimetres = np.array([[0, 1000], [2500, 65535]], np.uint16)
    depth = read_depth_png(write_label(tmp_path / "d.png", millimetres), depth_scale=1000.0)
    np.testing.assert_allclose(depth, [[0.0, 1.0], [2.5, 65.535]], rtol=1e-6)
    write_label(tmp_path / "d8.png", millimetres.astype(np.uint8))
    with pytest.raises(LabelError, match="16-bit"):
        read_depth_png(tmp_path / "d8.png", 1000.0)
