"""Small on-disk datasets for the data tests (a few tiny images each, written with OpenCV)."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from clsvit_lightning.data.synthetic.writers import write_synthetic


def write_image(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 array (JPEG or PNG by suffix) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    encoded.tofile(path)
    return path


def write_label(path: Path, label: np.ndarray) -> Path:
    """Write a single-channel label / depth PNG (uint8 or uint16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", label)
    assert ok
    encoded.tofile(path)
    return path


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A tiny synthetic set in both layouts: 4 classes, 24 train / 8 val scenes of 40-56 px."""
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, num_train=24, num_val=8, num_classes=4, size_range=(40, 56), seed=3)
    return out


def write_exif_rotated_jpeg(path: Path, rgb: np.ndarray, orientation: int = 6) -> Path:
    """A JPEG storing ``rgb`` as is, with an EXIF Orientation tag (6 = display rotated 90 degrees clockwise)."""
    from PIL import Image  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, exif=exif)
    return path


def skip_warnings(caplog) -> list[str]:
    """The "skipped N" summary lines logged by the datasets (one per split listed)."""
    return [record.getMessage() for record in caplog.records if ": skipped " in record.getMessage()]
