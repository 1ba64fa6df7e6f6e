"""Procedural scenes: textured backgrounds with objects whose shape, colour and texture carry the class.

Deterministic: scene ``(seed, split, index)`` is drawn from ``np.random.default_rng([seed, split, index])``
alone, so any subset can be regenerated, in any order or process. Pure numpy + OpenCV.

Class ``c`` of ``K``: shape ``SHAPES[c % 10]``, hue ``c / K`` of the colour wheel, texture
``TEXTURES[c % 4]``. A scene has one large object of its intended class (drawn last, on top), up to
two smaller objects of other classes, and sometimes a grey "clutter" blob.

Annotation values follow ADE20K's convention (0 = "other", ignored after reduce-zero-label):
``0`` clutter, ``1`` background, ``2 + c`` object class ``c``. The image-level label is the object
class covering the most pixels, so the global and the dense task agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SHAPES = ("disc", "square", "triangle", "star", "cross", "ring", "hexagon", "bar", "diamond", "crescent")
TEXTURES = ("plain", "stripes", "checker", "dots")
CLUTTER_LABEL, BACKGROUND_LABEL, FIRST_OBJECT_LABEL = 0, 1, 2


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # [H, W, 3] uint8 RGB
    annotation: np.ndarray  # [H, W] uint8: 0 clutter, 1 background, 2 + c object class c
    label: int  # object class with the most pixels


def class_name(class_index: int) -> str:
    return f"{SHAPES[class_index % len(SHAPES)]}_{TEXTURES[class_index % len(TEXTURES)]}"


def _polygon(center: np.ndarray, radii: np.ndarray, angles: np.ndarray) -> np.ndarray:
    points = center + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)  # [n, 2] (x, y)
    return np.round(points).astype(np.int32)


def shape_mask(shape: str, height: int, width: int, center: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """``[H, W]`` bool silhouette of ``shape`` (no anti-aliasing, so masks are exact)."""
    canvas = np.zeros((height, width), np.uint8)
    cx, cy = (int(round(v)) for v in center)
    r = max(2, int(round(radius)))
    regular = {"square": (4, np.pi / 4), "triangle": (3, -np.pi / 2), "hexagon": (6, 0.0)}
    if shape == "disc":
        cv2.circle(canvas, (cx, cy), r, 1, -1)
    elif shape in regular:
        sides, offset = regular[shape]
        angles = angle + offset + np.arange(sides) * 2 * np.pi / sides
        cv2.fillPoly(canvas, [_polygon(center, np.full(sides, radius), angles)], 1)
    elif shape == "star":
        angles = angle - np.pi / 2 + np.arange(10) * np.pi / 5
        cv2.fillPoly(canvas, [_polygon(center, np.tile([radius, 0.45 * radius], 5), angles)], 1)
    elif shape == "cross":
        arm = max(1, r // 3)
        cv2.rectangle(canvas, (cx - r, cy - arm), (cx + r, cy + arm), 1, -1)
        cv2.rectangle(canvas, (cx - arm, cy - r), (cx + arm, cy + r), 1, -1)
    elif shape == "ring":
        cv2.circle(canvas, (cx, cy), r, 1, -1)
        cv2.circle(canvas, (cx, cy), max(1, int(0.55 * r)), 0, -1)
    elif shape == "bar":
        cv2.ellipse(canvas, (cx, cy), (r, max(1, int(0.4 * r))), float(np.degrees(angle)), 0, 360, 1, -1)
    elif shape == "diamond":
        angles = angle + np.arange(4) * np.pi / 2
        cv2.fillPoly(canvas, [_polygon(center, np.array([0.6, 1.0, 0.6, 1.0]) * radius, angles)], 1)
    elif shape == "crescent":
        cv2.circle(canvas, (cx, cy), r, 1, -1)
        cv2.circle(canvas, (cx + int(0.45 * r), cy - int(0.2 * r)), int(0.8 * r), 0, -1)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return canvas.astype(bool)


def texture_pattern(texture: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``[H, W]`` float32 brightness multiplier in [0.55, 1] drawing the class texture."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(5.0, 8.0)
    if texture == "plain":
        return np.ones((height, width), np.float32)
    if texture == "stripes":
        theta = rng.uniform(0, np.pi)
        wave = np.sin(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / period)
        return (0.775 + 0.225 * np.sign(wave)).astype(np.float32)
    if texture == "checker":
        cells = (np.floor(x / (period / 1.5)) + np.floor(y / (period / 1.5))) % 2
        return (0.55 + 0.45 * cells).astype(np.float32)
    if texture == "dots":
        dx, dy = (x % period) - period / 2, (y % period) - period / 2
        return np.where(dx**2 + dy**2 < (period / 3.5) ** 2, 0.55, 1.0).astype(np.float32)
    raise ValueError(f"unknown texture {texture!r}; expected one of {TEXTURES}")


def class_colour(class_index: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB colour near the class hue, strongly saturated (backgrounds are not)."""
    hue = (180.0 * class_index / num_classes + rng.uniform(-4, 4)) % 180  # OpenCV hue is 0..179
    hsv = np.array([[[hue, rng.uniform(170, 255), rng.uniform(170, 255)]]], np.float32).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth, weakly saturated colour noise plus fine grain: ``[H, W, 3]`` float32 in 0..255."""
    grid = rng.uniform(60, 200, size=(3, 4, 1)) + rng.uniform(-20, 20, size=(3, 4, 3))  # [3, 4, RGB]
    smooth = cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return smooth + rng.normal(0, 6, size=(height, width, 3)).astype(np.float32)


def make_scene(
    num_classes: int, class_index: int, rng: np.random.Generator, size_range: tuple[int, int] = (64, 96)
) -> Scene:
    """One scene whose large object is of class ``class_index``."""
    height, width = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    image = background(height, width, rng)
    annotation = np.full((height, width), BACKGROUND_LABEL, np.uint8)
    side = min(height, width)
    if rng.random() < 0.3:  # an unlabelled grey blob, like ADE20K's "other"
        blob = shape_mask("disc", height, width, rng.uniform([0, 0], [width, height]), side * 0.1, 0.0)
        image[blob] = rng.uniform(90, 160)
        annotation[blob] = CLUTTER_LABEL
    others = [c for c in range(num_classes) if c != class_index]
    num_distractors = int(rng.integers(0, 3)) if others else 0
    objects = [(int(c), side * rng.uniform(0.12, 0.18)) for c in rng.choice(others, num_distractors, replace=False)]
    objects.append((class_index, side * rng.uniform(0.28, 0.38)))  # the main object, drawn last (on top)
    for index, radius in objects:
        center = rng.uniform([radius, radius], [width - radius, height - radius])
        silhouette = shape_mask(SHAPES[index % len(SHAPES)], height, width, center, radius, rng.uniform(-0.3, 0.3))
        pattern = texture_pattern(TEXTURES[index % len(TEXTURES)], height, width, rng)
        image[silhouette] = class_colour(index, num_classes, rng) * pattern[silhouette, None]
        annotation[silhouette] = FIRST_OBJECT_LABEL + index
    counts = np.bincount(annotation.ravel(), minlength=FIRST_OBJECT_LABEL + num_classes)[FIRST_OBJECT_LABEL:]
    return Scene(np.clip(image, 0, 255).astype(np.uint8), annotation, int(np.argmax(counts)))
