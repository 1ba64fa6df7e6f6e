"""Albumentations transforms for the mmsegmentation training recipe of DINOv2's linear segmentation eval.

Protocol: docs/protocols.md#ade20k-linear-segmentation.

Written as albumentations transforms (randomness from ``self.py_random``) so that one ``Compose``
holds the whole pipeline and :func:`clsvit_lightning.data.seeding.reseed_augmentations` reseeds it.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np


class RandomShortSideScale(A.DualTransform):
    """Resize so that the short side is ``base_size * r``, ``r ~ U(ratio_range)``, keeping the aspect ratio.

    mmseg's ``Resize(img_scale=(long, base), ratio_range=...)``. DINOv2's configs set ``long`` to
    99999999, i.e. no cap (the default, ``None``); mmseg's own ADE20K config caps the long side at
    ``max_long_side_ratio * base_size * r`` with ratio 4. Image bilinear, masks nearest.
    """

    def __init__(
        self,
        base_size: int,
        ratio_range: tuple[float, float] = (0.5, 2.0),
        max_long_side_ratio: float | None = None,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.base_size = base_size
        self.ratio_range = tuple(ratio_range)
        self.max_long_side_ratio = max_long_side_ratio

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        short_target = self.base_size * self.py_random.uniform(*self.ratio_range)
        factor = short_target / min(height, width)
        if self.max_long_side_ratio is not None:
            factor = min(factor, self.max_long_side_ratio * short_target / max(height, width))
        return {"out_size": (max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5)))}

    def apply(self, img: np.ndarray, out_size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(img, out_size[::-1], interpolation=cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, out_size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(mask, out_size[::-1], interpolation=cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("base_size", "ratio_range", "max_long_side_ratio")


class RandomCropCatMaxRatio(A.RandomCrop):
    """Random crop that avoids crops dominated by one class (mmseg ``RandomCrop(cat_max_ratio=...)``).

    Up to 10 candidate crops are drawn; the first whose label histogram (``ignore_index`` excluded)
    has more than one class and a largest class below ``cat_max_ratio`` of the labelled pixels is
    kept, else the 10th. ``cat_max_ratio=1`` is a plain random crop. As in mmseg, a side shorter
    than the crop is kept whole (the crop is ``min(crop, image)``): pad afterwards (``A.PadIfNeeded``).
    """

    def __init__(
        self, height: int, width: int, cat_max_ratio: float = 0.75, ignore_index: int = 255, max_tries: int = 10
    ) -> None:
        super().__init__(height=height, width=width)
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index
        self.max_tries = max_tries

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        mask = data.get("mask")
        for _ in range(self.max_tries):
            crop = self._random_crop(*params["shape"][:2])
            if self.cat_max_ratio >= 1.0 or mask is None:
                return crop
            x_min, y_min, x_max, y_max = crop["crop_coords"]
            labels = mask[y_min:y_max, x_min:x_max]
            counts = np.bincount(labels[labels != self.ignore_index].ravel())
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                return crop
        return crop

    def _random_crop(self, image_height: int, image_width: int) -> dict[str, Any]:
        """mmseg's offsets: uniform in ``[0, max(image - crop, 0)]``, inclusive."""
        height, width = min(self.height, image_height), min(self.width, image_width)
        top = self.py_random.randint(0, image_height - height)
        left = self.py_random.randint(0, image_width - width)
        return {"crop_coords": (left, top, left + width, top + height), "pad_params": None}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "cat_max_ratio", "ignore_index", "max_tries")


class PhotoMetricDistortion(A.ImageOnlyTransform):
    """mmseg ``PhotoMetricDistortion`` on uint8 RGB; each step applied with probability 0.5.

    brightness ``x + U(-32, 32)``; contrast ``x * U(0.5, 1.5)`` (before or after the HSV steps, at
    random); saturation ``S * U(0.5, 1.5)``; hue ``(H + randint(-18, 18)) mod 180`` (OpenCV's 0..179
    hue). Every step clips to [0, 255], as in mmseg.
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = hue_delta

    def get_params(self) -> dict[str, Any]:
        rand = self.py_random
        return {
            "brightness": rand.uniform(-self.brightness_delta, self.brightness_delta) if rand.random() < 0.5 else None,
            "contrast_first": rand.random() < 0.5,
            "contrast": rand.uniform(*self.contrast_range) if rand.random() < 0.5 else None,
            "saturation": rand.uniform(*self.saturation_range) if rand.random() < 0.5 else None,
            "hue": rand.randint(-self.hue_delta, self.hue_delta) if rand.random() < 0.5 else None,
        }

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        values = np.arange(256, dtype=np.float32)

        def table(scale: float = 1.0, shift: float = 0.0, inputs: np.ndarray = values) -> np.ndarray:
            # mmseg's convert(): clip(x * scale + shift) then truncation to uint8, after every step.
            return np.clip(inputs * scale + shift, 0, 255).astype(np.uint8)

        # Brightness and contrast are pointwise: fold the steps before the HSV ones into one lookup table.
        before = values if params["brightness"] is None else table(shift=params["brightness"]).astype(np.float32)
        if params["contrast"] is not None and params["contrast_first"]:
            before = table(scale=params["contrast"], inputs=before)
        img = cv2.LUT(img, before.astype(np.uint8))
        if params["saturation"] is not None or params["hue"] is not None:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            if params["saturation"] is not None:
                hsv[..., 1] = cv2.LUT(hsv[..., 1], table(scale=params["saturation"]))
            if params["hue"] is not None:
                hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + params["hue"]) % 180).astype(np.uint8)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if params["contrast"] is not None and not params["contrast_first"]:
            img = cv2.LUT(img, table(scale=params["contrast"]))
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness_delta", "contrast_range", "saturation_range", "hue_delta")
