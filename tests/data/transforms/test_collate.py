"""Batch layout: crop-major multi-crop batches with iBOT masks, normalisation, padded dense batches."""

import numpy as np
import pytest
import torch

from clsvit_lightning.data.transforms.collate import MultiCropCollate, collate_dense, collate_labelled
from clsvit_lightning.data.transforms.tensors import IMAGENET_MEAN, IMAGENET_STD, denormalize, stack_normalized


def constant_crop(size: int, value: int) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def multicrop_sample(sample: int, num_local: int = 3) -> dict:
    # Pixel value 10 * sample + crop identifies where each crop must land in the batch.
    return {
        "global_crops": [constant_crop(32, 10 * sample + k) for k in range(2)],
        "local_crops": [constant_crop(16, 10 * sample + 2 + k) for k in range(num_local)],
        "label": sample,
    }


def test_stack_normalized_matches_the_formula():
    images = [np.random.default_rng(i).integers(0, 256, (5, 7, 3), dtype=np.uint8) for i in range(3)]
    expected = (
        torch.tensor(np.stack(images)).permute(0, 3, 1, 2).double() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    ) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = stack_normalized(images)
    assert out.shape == (3, 3, 5, 7) and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        denormalize(out), torch.tensor(np.stack(images)).permute(0, 3, 1, 2).float(), atol=1e-3, rtol=0
    )


def test_multicrop_batch_is_crop_major():
    batch = MultiCropCollate(global_crop_size=32, patch_size=8)([multicrop_sample(b) for b in range(4)])
    assert batch["global_crops"].shape == (2, 4, 3, 32, 32)
    assert batch["local_crops"].shape == (3, 4, 3, 16, 16)
    pixel = denormalize(batch["global_crops"].flatten(0, 1))[:, 0, 0, 0].round().long()
    # [k, b] holds crop k of sample b; flattened: index k * B + b (DINOv2's order)
    assert pixel.tolist() == [10 * b + k for k in range(2) for b in range(4)]
    local_pixel = denormalize(batch["local_crops"].flatten(0, 1))[:, 0, 0, 0].round().long()
    assert local_pixel.tolist() == [10 * b + 2 + k for k in range(3) for b in range(4)]
    assert batch["labels"].tolist() == [0, 1, 2, 3]


def test_masks():
    torch.manual_seed(0)
    batch = MultiCropCollate(global_crop_size=64, patch_size=8)([multicrop_sample(b, 0) for b in range(8)])
    assert batch["masks"].shape == (2, 8, 64) and batch["masks"].dtype == torch.bool
    masks = batch["masks"].flatten(0, 1)  # [16, 64]
    assert (masks.sum(1) > 0).sum() == 8  # int(16 * 0.5) global crops carry a mask
    assert batch["local_crops"].shape == (0, 8, 3, 0, 0)
    # The per-patch bookkeeping (indices, 1 / masked-per-crop weights) is derived from the masks on
    # the device by the training step (losses/ibot_patch_loss.py), not shipped with the batch.
    assert set(batch) == {"global_crops", "local_crops", "masks", "labels"}


def test_global_crop_must_divide_into_patches():
    with pytest.raises(ValueError, match="patch_size"):
        MultiCropCollate(global_crop_size=100, patch_size=16)


def test_collate_labelled():
    batch = collate_labelled([{"image": constant_crop(8, 0), "label": 3}, {"image": constant_crop(8, 255), "label": 1}])
    assert batch["image"].shape == (2, 3, 8, 8) and batch["label"].tolist() == [3, 1]


def test_dense_batch_pads_with_ignore_and_keeps_sizes():
    samples = [
        {"image": constant_crop(4, 100)[:3], "mask": np.zeros((3, 4), np.uint8)},
        {"image": constant_crop(5, 100), "mask": np.ones((5, 5), np.uint8)},
    ]
    batch = collate_dense(samples)
    assert batch["image"].shape == (2, 3, 5, 5) and batch["mask"].dtype == torch.long
    assert batch["image_size"].tolist() == [[3, 4], [5, 5]]
    assert (batch["mask"][0, 3:, :] == 255).all() and (batch["mask"][0, :, 4] == 255).all()
    assert (batch["mask"][0, :3, :4] == 0).all() and (batch["mask"][1] == 1).all()
    assert (batch["image"][0, :, 3:, :] == 0).all()


def test_uint8_batches_normalised_on_the_device_equal_the_normalised_collate():
    from clsvit_lightning.data.transforms.tensors import normalize_on_device

    samples = [multicrop_sample(b) for b in range(3)]
    torch.manual_seed(0)
    normalised = MultiCropCollate(global_crop_size=32, patch_size=8)(samples)
    torch.manual_seed(0)
    raw = MultiCropCollate(global_crop_size=32, patch_size=8, normalize=False)(samples)
    assert raw["global_crops"].dtype == torch.uint8 and raw["global_crops"].shape == (2, 3, 3, 32, 32)
    assert torch.equal(raw["masks"], normalised["masks"])
    on_device = normalize_on_device(dict(raw))
    for key in ("global_crops", "local_crops"):
        torch.testing.assert_close(on_device[key], normalised[key], atol=1e-5, rtol=0)
    assert (
        normalize_on_device({"global_crops": normalised["global_crops"]})["global_crops"] is normalised["global_crops"]
    )
