"""Batch builders: multi-crop (crop-major, with iBOT masks), labelled images, dense pairs.

Crop-major order (``dinov2/data/collate.py``; docs/recipe.md#multi-crop-augmentation) with the crop group as its
own dimension:
``global_crops[k, b]`` is crop ``k`` of sample ``b``, and ``global_crops.flatten(0, 1)`` is DINOv2's
``[crop0 of all samples, crop1 of all samples]`` batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from clsvit_lightning.data.seeding import batch_rng
from clsvit_lightning.data.transforms.masking import BlockMaskGenerator, stratified_masks
from clsvit_lightning.data.transforms.tensors import stack_normalized, stack_uint8

MASK_STREAM = 1  # separates the mask draws from any other batch-level draw keyed on the same samples


def torch_seeded_rng() -> np.random.Generator:
    """A numpy generator seeded from torch's global RNG.

    Collate functions run in the DataLoader workers, where torch's RNG is reseeded per worker and
    per epoch (and follows ``seed_everything``); a generator built once in the main process would be
    copied into every worker and replay the same masks.
    """
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


class MultiCropCollate:
    """Samples ``{"global_crops", "local_crops", "label"}`` -> the SSL batch.

    Crop groups keep their own axis, so no consumer has to infer them from a position:

    - ``global_crops``: ``[n_global, B, 3, G, G]`` float, ImageNet-normalised (``normalize=False``:
      uint8, for :func:`~clsvit_lightning.data.transforms.tensors.normalize_on_device`);
    - ``local_crops``: ``[n_local, B, 3, L, L]`` float (``[0, B, 3, 0, 0]`` if no local crops);
    - ``masks``: ``[n_global, B, N]`` bool iBOT masks of the global crops, ``N = (G // patch_size) ** 2``
      (True = masked; ``masks.flatten(0, 1)`` is what ``VisionTransformer.forward_features`` takes
      for ``global_crops.flatten(0, 1)``);
    - ``labels``: ``[B]`` long (``-1`` when the dataset has none), for online probes.

    DINOv2's collate also ships the masked patches' indices and weights and an upper bound on
    their count; here the training step derives them from ``masks`` on the device
    (:func:`~clsvit_lightning.losses.ibot_patch_loss.masks_weight_from_masks`), which gathers
    exactly the masked patches, so no bound is needed.
    """

    def __init__(
        self,
        global_crop_size: int = 224,
        patch_size: int = 16,
        mask_ratio_range: tuple[float, float] = (0.1, 0.5),
        mask_sample_probability: float = 0.5,
        normalize: bool = True,
    ) -> None:
        self.stack = stack_normalized if normalize else stack_uint8
        if global_crop_size % patch_size:
            raise ValueError(f"global_crop_size={global_crop_size} is not a multiple of patch_size={patch_size}")
        grid = global_crop_size // patch_size
        self.mask_generator = BlockMaskGenerator(grid, grid)
        self.mask_ratio_range = tuple(mask_ratio_range)
        self.mask_sample_probability = mask_sample_probability

    def __call__(self, samples: Sequence[dict]) -> dict[str, Tensor]:
        batch_size = len(samples)
        num_global = len(samples[0]["global_crops"])
        num_local = len(samples[0]["local_crops"])
        global_crops = self.stack([s["global_crops"][k] for k in range(num_global) for s in samples])
        global_crops = global_crops.unflatten(0, (num_global, batch_size))  # [G*B, 3, H, W] -> [G, B, 3, H, W]
        local_crops = self.stack([s["local_crops"][k] for k in range(num_local) for s in samples])
        local_crops = (
            local_crops.unflatten(0, (num_local, batch_size))
            if num_local
            else local_crops.new_empty(0, batch_size, 3, 0, 0)
        )  # [L, B, 3, h, w]
        keys = [s.get("sample_key") for s in samples]
        # Keyed on the batch's samples when they carry keys (data/seeding.py): the same masks with any
        # number of workers and after a resume. Otherwise from the worker's torch RNG.
        rng = batch_rng(keys, MASK_STREAM) if all(k is not None for k in keys) else torch_seeded_rng()
        flat_masks = stratified_masks(
            self.mask_generator, num_global * batch_size, self.mask_ratio_range, self.mask_sample_probability, rng
        )  # [G*B, N]
        masks = torch.from_numpy(flat_masks).unflatten(0, (num_global, batch_size))  # [G, B, N]
        return {
            "global_crops": global_crops,
            "local_crops": local_crops,
            "masks": masks,
            "labels": torch.tensor([s.get("label", -1) for s in samples]),
        }


def collate_labelled(samples: Sequence[dict]) -> dict[str, Tensor]:
    """Samples ``{"image": [H, W, 3] uint8, "label": int}`` -> ``{"image": [B, 3, H, W], "label": [B]}``."""
    return {
        "image": stack_normalized([s["image"] for s in samples]),
        "label": torch.tensor([s["label"] for s in samples]),
    }


def collate_dense(samples: Sequence[dict], pad_value: dict[str, float] | None = None) -> dict[str, Tensor]:
    """Samples ``{"image": [H, W, 3] uint8, <target>: [H, W], ...}`` -> batched tensors.

    Images of different sizes (validation at full resolution) are padded bottom/right to the
    largest in the batch: images with 0 after normalisation, targets with ``pad_value[key]``
    (255 = ignore for ``mask``, 0 = invalid for ``depth``/``valid``). ``image_size`` ``[B, 2]`` keeps
    each original ``(H, W)``.
    """
    pad_value = {"mask": 255, "depth": 0.0, "valid": False} if pad_value is None else pad_value
    height = max(s["image"].shape[0] for s in samples)
    width = max(s["image"].shape[1] for s in samples)
    images = [s["image"] for s in samples]
    batch: dict[str, Tensor] = {"image_size": torch.tensor([im.shape[:2] for im in images])}
    if all(im.shape[:2] == (height, width) for im in images):
        batch["image"] = stack_normalized(images)
    else:
        batch["image"] = torch.zeros(len(samples), 3, height, width)
        for index, image in enumerate(images):
            batch["image"][index, :, : image.shape[0], : image.shape[1]] = stack_normalized([image])[0]
    for key in samples[0]:
        if key == "image":
            continue
        targets = [torch.as_tensor(s[key]) for s in samples]
        out = torch.full((len(samples), height, width), pad_value.get(key, 0), dtype=targets[0].dtype)
        for index, target in enumerate(targets):
            out[index, : target.shape[0], : target.shape[1]] = target
        batch[key] = out.long() if key == "mask" else out
    return batch
