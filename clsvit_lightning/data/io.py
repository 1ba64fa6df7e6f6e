"""Reading images, label maps and depth maps from disk, with errors that name the file.

Images are decoded with OpenCV straight to RGB ``uint8`` ``[H, W, 3]`` (grayscale and CMYK JPEGs
are converted): augmentations run on ``uint8`` so albumentations' lookup-table ops stay fast, and
normalisation happens once per batch in the collate functions (``data/transforms/tensors.py``).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # matched case-insensitively (.JPG, .JPEG, ...)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


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


def read_rgb(path: str | Path, ignore_orientation: bool = False) -> np.ndarray:
    """Decode an image file to RGB ``uint8`` ``[H, W, 3]``; a truncated or non-image file raises with its path.

    OpenCV applies a JPEG's EXIF orientation (a phone photo comes out upright). ``ignore_orientation``
    decodes the pixels as stored instead: what dense tasks need, as their label maps carry no EXIF
    and are aligned with the stored pixels.
    """
    path = Path(path)
    data = _read_bytes(path)
    # OpenCV >= 4.10 decodes to RGB directly, which saves a BGR->RGB copy per image.
    flags = cv2.IMREAD_COLOR_RGB | (cv2.IMREAD_IGNORE_ORIENTATION if ignore_orientation else 0)
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise CorruptImageError(
            f"cannot decode image {path} ({data.size} bytes): unreadable, truncated or not an image"
        )
    return image


def read_label_map(path: str | Path) -> np.ndarray:
    """Decode a single-channel label PNG to ``[H, W]`` (``uint8`` or ``uint16``), palette PNGs as indices.

    OpenCV expands palette PNGs (Pascal VOC's ``SegmentationClass``) to colours, so those are read
    with Pillow, which keeps the palette indices that are the class ids. A JPEG (whatever its name)
    or a ``.png`` whose bytes are not PNG is an error: lossy compression blurs class ids into
    neighbouring, wrong ones that can still pass the range check.
    """
    path = Path(path)
    data = _read_bytes(path)
    check_lossless_label(path, data)
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


def check_lossless_label(path: Path, data: np.ndarray) -> None:
    """Raise :class:`LabelError` if a label map's bytes are JPEG, or not PNG although it is named ``.png``."""
    head = data[:8].tobytes()
    if head.startswith(JPEG_SIGNATURE):
        raise LabelError(
            f"label map {path} is a JPEG (its bytes start with FF D8 FF): lossy compression changes class ids; "
            "masks must be saved losslessly (PNG)"
        )
    if path.suffix.lower() == ".png" and data.size and not head.startswith(PNG_SIGNATURE):
        raise LabelError(
            f"label map {path} is named .png but its bytes are not PNG (first bytes {head[:4].hex(' ')}, "
            f"expected {PNG_SIGNATURE[:4].hex(' ')}): re-save the masks losslessly as real PNG files"
        )


def check_mask_size(mask: np.ndarray, mask_path: Path, image: np.ndarray, image_path: Path, what: str = "mask") -> None:
    """Raise :class:`LabelError` naming both files if ``mask`` is not ``image``'s size (and say if H, W are swapped)."""
    if mask.shape[:2] == image.shape[:2]:
        return
    hint = ""
    if mask.shape[:2] == image.shape[1::-1]:
        hint = (
            " (height and width swapped: the image is transposed against its mask, e.g. rotated by an EXIF "
            "orientation tag when it was exported)"
        )
    raise LabelError(
        f"{what} {mask_path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but image {image_path} is "
        f"{image.shape[1]}x{image.shape[0]}{hint}; a {what} must have its image's size"
    )


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


class SkipReport:
    """What a dataset left out while listing a split, counted by reason with one example path each.

    :meth:`log` writes it as a single warning line (nothing when nothing was skipped).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.counts: dict[str, int] = {}
        self.examples: dict[str, Path] = {}

    def add(self, reason: str, path: Path, count: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + count
        self.examples.setdefault(reason, path)

    def add_all(self, reason: str, paths: Iterable[Path]) -> None:
        for path in paths:
            self.add(reason, path)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __str__(self) -> str:
        parts = [f"{count} {reason} (e.g. {self.examples[reason]})" for reason, count in self.counts.items()]
        return f"{self.what}: skipped {self.total}: " + "; ".join(parts)

    def log(self) -> None:
        if self.counts:
            log.warning("%s", self)


def list_images(folder: Path, recursive: bool = False, skipped: SkipReport | None = None) -> list[Path]:
    """Image files in ``folder`` (sorted, so indices are stable across machines); extensions match case-insensitively.

    With ``recursive`` sub-folders are searched too (symlinked folders followed, each real folder
    once). What is left out goes to ``skipped``: broken symlinks, files without an image extension,
    sub-folders when not ``recursive``, unreadable folders; without ``skipped`` they are logged here,
    in one warning.
    """
    own_report = skipped is None
    skipped = SkipReport(f"images in {folder}") if skipped is None else skipped
    found: list[Path] = []
    seen: set[str] = set()

    def unreadable(error: OSError) -> None:
        skipped.add("unreadable folder", Path(error.filename or folder))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable, followlinks=True):
        directory = Path(dirpath)
        real = os.path.realpath(dirpath)
        if real in seen:
            skipped.add("folder already listed (symlink loop or duplicate link)", directory)
            dirnames[:] = []
            continue
        seen.add(real)
        for name in filenames:
            path = directory / name
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.add(f"not an image ({'/'.join(IMAGE_EXTENSIONS)})", path)
                continue
            try:
                regular = stat.S_ISREG(os.stat(path).st_mode)  # one stat per image, following symlinks
            except FileNotFoundError:
                skipped.add("broken symlink", path)
                continue
            except OSError:
                skipped.add("unreadable file", path)
                continue
            if regular:
                found.append(path)
            else:
                skipped.add("not a regular file", path)
        if not recursive:
            skipped.add_all("sub-folder (not searched)", (directory / name for name in dirnames))
            break
        dirnames.sort()
    if own_report:
        skipped.log()
    return sorted(found)


def suffix_variants(suffix: str) -> list[str]:
    """Spellings of a file ending that name the same format: case, and ``.jpg`` / ``.jpeg`` (first = as given)."""
    prefix, dot, ext = suffix.rpartition(".")
    extensions = [ext]
    for a, b in (("jpg", "jpeg"), ("jpeg", "jpg")):
        if ext.lower() == a:
            extensions.append(b)
    variants: list[str] = []
    for head in (prefix, prefix.lower(), prefix.upper()):
        for extension in extensions:
            for tail in (extension, extension.lower(), extension.upper()):
                variants.append(f"{head}{dot}{tail}")
    return list(dict.fromkeys(variants))


def strip_suffix(name: str, suffix: str) -> str | None:
    """``name`` without ``suffix`` (any spelling from :func:`suffix_variants`, case-insensitive), or None."""
    lower = name.lower()
    for variant in suffix_variants(suffix):
        if lower.endswith(variant.lower()):
            return name[: -len(variant)]
    return None


def find_with_suffix(stem: Path, suffix: str) -> Path | None:
    """The file ``stem + suffix`` in the first spelling of :func:`suffix_variants` that exists, or None."""
    for variant in suffix_variants(suffix):
        path = stem.parent / f"{stem.name}{variant}"
        if path.is_file():
            return path
    return None


def require_dir(path: Path, layout: str) -> Path:
    """Return ``path`` if it is a folder, else raise naming it and the expected layout."""
    if not path.is_dir():
        raise DatasetLayoutError(f"missing folder {path}; expected this layout:\n{layout}")
    return path
