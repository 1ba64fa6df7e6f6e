"""Reading images, label maps and depth maps from disk, with errors that name the file.

Images are decoded with OpenCV straight to RGB ``uint8`` ``[H, W, 3]`` (grayscale and CMYK JPEGs
are converted): augmentations run on ``uint8`` so albumentations' lookup-table ops stay fast, and
normalisation happens once per batch in the collate functions (``data/transforms/tensors.py``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder does not have the layout the loader expects (the message shows that layout)."""


class CorruptImageError(OSError):
    """A file could not be decoded (unreadable, truncated, or not an image)."""


class LabelError(ValueError):
    """A label map does not fit its image or holds values outside the class range."""


def _read_bytes(path: Path) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise CorruptImageError(f"cannot read {path}: {error}") from error


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB ``uint8`` ``[H, W, 3]``; a truncated or non-image file raises with its path."""
    path = Path(path)
    data = _read_bytes(path)
    # OpenCV >= 4.10 decodes to RGB directly, which saves a BGR->RGB copy per image.
    image = cv2.imdecode(data, cv2.IMREAD_COLOR_RGB) if data.size else None
    if image is None:
        raise CorruptImageError(
            f"cannot decode image {path} ({data.size} bytes): unreadable, truncated or not an image"
        )
    return image


def read_label_map(path: str | Path) -> np.ndarray:
    """Decode a single-channel label PNG to ``[H, W]`` (``uint8`` or ``uint16``), palette PNGs as indices.

    OpenCV expands palette PNGs (Pascal VOC's ``SegmentationClass``) to colours, so those are read
    with Pillow, which keeps the palette indices that are the class ids.
    """
    path = Path(path)
    data = _read_bytes(path)
    label = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if label is None:
        raise CorruptImageError(f"cannot decode label map {path}: unreadable, truncated or not an image")
    if label.ndim == 2:
        return label
    from PIL import Image  # noqa: PLC0415 (only palette PNGs need it)

    with Image.open(path) as pil_image:
        if pil_image.mode != "P":
            raise LabelError(
                f"label map {path} has {label.shape[2]} channels (mode {pil_image.mode}); expected a single-channel "
                "PNG of class ids or a palette PNG"
            )
        return np.asarray(pil_image).copy()


def read_depth_png(path: str | Path, depth_scale: float) -> np.ndarray:
    """Decode a 16-bit depth PNG to float32 depth ``[H, W]`` = stored value / ``depth_scale`` (0 = no measurement)."""
    path = Path(path)
    data = _read_bytes(path)
    depth = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if depth is None:
        raise CorruptImageError(f"cannot decode depth map {path}: unreadable, truncated or not an image")
    if depth.ndim != 2 or depth.dtype != np.uint16:
        raise LabelError(
            f"depth map {path} is {depth.dtype} with shape {depth.shape}; expected a single-channel 16-bit PNG"
        )
    return depth.astype(np.float32) / depth_scale


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (sorted, so indices are stable across machines)."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def require_dir(path: Path, layout: str) -> Path:
    """Return ``path`` if it is a folder, else raise naming it and the expected layout."""
    if not path.is_dir():
        raise DatasetLayoutError(f"missing folder {path}; expected this layout:\n{layout}")
    return path
