"""Reading a folder of images for the analysis command."""

import cv2
import numpy as np
import pytest
import torch

from clsvit_lightning.analysis import find_images, load_images
from clsvit_lightning.data.transforms.tensors import IMAGENET_MEAN, IMAGENET_STD


def write_images(folder):
    (folder / "nested").mkdir(parents=True)
    cv2.imwrite(str(folder / "a.png"), np.full((40, 60, 3), 255, np.uint8))  # white, wide
    cv2.imwrite(str(folder / "nested" / "b.jpg"), np.random.randint(0, 255, (70, 50, 3), np.uint8))  # tall
    (folder / "notes.txt").write_text("not an image")


def test_images_are_found_recursively_resized_cropped_and_normalised(tmp_path):
    write_images(tmp_path)
    images, paths = load_images(tmp_path, size=40, patch_size=16)
    assert [p.name for p in paths] == ["a.png", "b.jpg"]
    assert images.shape == (2, 3, 32, 32)  # 40 rounded down to a multiple of 16
    white = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(images[0].mean(dim=(1, 2)), white, atol=1e-5)


def test_bad_folders_and_files_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data: image folder .* does not exist"):
        find_images(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no .jpg/.jpeg/.png images found"):
        find_images(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match="cannot read image .*broken.jpg"):
        load_images(tmp_path, size=32, patch_size=8)
