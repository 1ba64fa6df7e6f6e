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


def test_exif_orientation_ignored_on_request(tmp_path):
    from tests.data.conftest import write_exif_rotated_jpeg

    path = write_exif_rotated_jpeg(tmp_path / "phone.jpg", random_rgb(4, 8))
    assert read_rgb(path).shape == (8, 4, 3)  # classification: shown upright, as a viewer would
    assert read_rgb(path, ignore_orientation=True).shape == (4, 8, 3)  # dense tasks: as stored, like the mask


def test_jpeg_mask_saved_as_png_is_rejected(tmp_path):
    labels = np.array([[0, 1, 150, 2]] * 8, np.uint8)  # in range for ADE20K: only the bytes can tell
    ok, encoded = cv2.imencode(".jpg", labels)
    assert ok
    encoded.tofile(tmp_path / "mask.png")
    with pytest.raises(LabelError, match=r"mask\.png is a JPEG"):
        read_label_map(tmp_path / "mask.png")
    encoded.tofile(tmp_path / "mask.bmp")  # a JPEG under any name is lossy
    with pytest.raises(LabelError, match=r"mask\.bmp is a JPEG"):
        read_label_map(tmp_path / "mask.bmp")
    ok, encoded = cv2.imencode(".bmp", labels)
    encoded.tofile(tmp_path / "bmp.png")
    with pytest.raises(LabelError, match=r"bmp\.png is named \.png but its bytes are not PNG"):
        read_label_map(tmp_path / "bmp.png")


def test_suffix_variants_and_listing_report(tmp_path, caplog):
    import logging

    from clsvit_lightning.data.io import SkipReport, list_images, strip_suffix

    assert strip_suffix("ADE_1.JPG", ".jpg") == strip_suffix("ADE_1.jpeg", ".jpg") == "ADE_1"
    assert strip_suffix("a_leftImg8bit.PNG", "_leftImg8bit.png") == "a" and strip_suffix("a.png", ".jpg") is None
    for name in ("a.JPG", "b.jpeg", "c.PNG", "notes.txt"):
        write_image(tmp_path / name, random_rgb(2, 2)) if name != "notes.txt" else (tmp_path / name).write_text("x")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    write_image(tmp_path / "sub" / "d.jpg", random_rgb(2, 2))
    report = SkipReport("test")
    assert [p.name for p in list_images(tmp_path, skipped=report)] == ["a.JPG", "b.jpeg", "c.PNG"]
    assert report.counts == {
        "broken symlink": 1,
        "not an image (.jpg/.jpeg/.png/.bmp/.webp)": 1,
        "sub-folder (not searched)": 1,
    }
    assert report.examples["broken symlink"] == tmp_path / "gone.jpg"
    with caplog.at_level(logging.WARNING):
        assert len(list_images(tmp_path, recursive=True)) == 4  # no report given: logged, in one line
    assert len([r for r in caplog.records if "skipped 2" in r.getMessage()]) == 1
