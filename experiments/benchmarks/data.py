"""Data pipeline speed on one core: decode, DINOv2 multi-crop, segmentation train pipeline.

    .venv/bin/python experiments/benchmarks/data.py [--samples 64 --rounds 5 --batch_size 32]

Prints one JSON object of samples/s on one core (torch and OpenCV limited to one thread), medians
over interleaved rounds. Inputs are a synthetic scene resized to a 500x375 JPEG (quality 90, the
ImageNet average size) and a 683x512 image + mask (ADE20K's typical size).

- ``decode``: JPEG bytes -> RGB uint8 (``data/io.py``).
- ``multicrop_augment``: decoded image -> 2 x 224 + 8 x 96 uint8 crops (``MultiCropTransform``).
- ``multicrop_pipeline``: augmentation + the batch collate (iBOT masks, uint8 crop stacks) per
  sample, as ``configs/pretrain/dinov2.yaml`` runs it (``normalize_on_device: true``: the module
  normalises the batch on its device, inside ``on_after_batch_transfer``).
- ``multicrop_pipeline_float``: the same with the normalisation in the collate (float batches;
  ``normalize_on_device: false``, the DataModule's default).
- ``multicrop_end_to_end``: decode + ``multicrop_pipeline``: what one loader worker sustains.
- ``multicrop_baseline``: the straightforward albumentations recipe (``A.Normalize`` + ``ToTensorV2``
  inside each crop's ``Compose``, then ``torch.stack``; decode excluded, no masks) in the same run.
- ``segmentation_train``: decoded image + mask -> 512 crop (mmseg recipe) + normalisation.
Target (issue 3): multicrop >= 250 samples/s/core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import albumentations as A
import cv2
import numpy as np
import torch

from clsvit_lightning.cpu_allocator import keep_freed_memory
from clsvit_lightning.data.io import read_rgb
from clsvit_lightning.data.seeding import SampleIndex, seed_sample
from clsvit_lightning.data.synthetic.scenes import make_scene
from clsvit_lightning.data.transforms.collate import MultiCropCollate, collate_dense
from clsvit_lightning.data.transforms.dense import segmentation_train_transform
from clsvit_lightning.data.transforms.multicrop import MultiCropTransform, crop_pipeline
from clsvit_lightning.data.transforms.tensors import IMAGENET_MEAN, IMAGENET_STD


def test_inputs(tmp_path: str = "/tmp") -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    scene = make_scene(10, 3, np.random.default_rng(0), size_range=(96, 96))
    photo = cv2.resize(scene.image, (500, 375), interpolation=cv2.INTER_CUBIC)
    photo = np.clip(photo + np.random.default_rng(1).normal(0, 4, photo.shape), 0, 255).astype(np.uint8)  # grain
    path = f"{tmp_path}/clsvit_bench_500x375.jpg"
    cv2.imwrite(path, cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    seg_image = cv2.resize(scene.image, (683, 512), interpolation=cv2.INTER_CUBIC)
    seg_mask = cv2.resize(scene.annotation, (683, 512), interpolation=cv2.INTER_NEAREST)
    return path, read_rgb(path), seg_image, seg_mask


def baseline_multicrop() -> list[A.Compose]:
    """The same recipe written the straightforward way: normalise and convert inside every crop's Compose."""
    tail = [A.Normalize(IMAGENET_MEAN, IMAGENET_STD), A.ToTensorV2()]
    specs = [(224, (0.32, 1.0), 0.0, 0.0), (224, (0.32, 1.0), 0.9, 0.2)] + [(96, (0.05, 0.32), 0.5, 0.0)] * 8
    return [A.Compose([*crop_pipeline(*spec).transforms, *tail]) for spec in specs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=64, help="samples per round and case")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=32, help="collate batch size")
    args = parser.parse_args()
    malloc_tuning = keep_freed_memory()  # as `clsvit` does (clsvit_lightning/cpu_allocator.py)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    path, photo, seg_image, seg_mask = test_inputs()
    multicrop = MultiCropTransform()
    # configs/pretrain/dinov2.yaml: uint8 batches, normalised by the module on its device.
    collate = MultiCropCollate(224, 16, normalize=False)
    collate_float = MultiCropCollate(224, 16, normalize=True)
    baseline = baseline_multicrop()
    segmentation = segmentation_train_transform()

    def decode() -> None:
        for _ in range(args.samples):
            read_rgb(path)

    def multicrop_augment() -> None:
        for _ in range(args.samples):
            multicrop(photo)

    def pipeline(source, collate_fn=collate) -> None:  # noqa: ANN001
        for start in range(0, args.samples, args.batch_size):
            count = min(args.batch_size, args.samples - start)
            collate_fn([{**multicrop(source()), "label": 0} for _ in range(count)])

    class Keyed:  # what a training dataset holds: its pipeline, reseeded from each sample's key
        transform = multicrop

    keyed, drawn = Keyed(), iter(range(10**9))

    def keyed_pipeline() -> None:  # as the training loaders run it (data/seeding.py: seed_sample)
        for start in range(0, args.samples, args.batch_size):
            count = min(args.batch_size, args.samples - start)
            samples = []
            for _ in range(count):
                seed_sample(keyed, SampleIndex(next(drawn), 0, 0))
                samples.append({**multicrop(photo), "label": 0})
            collate(samples)

    def multicrop_baseline() -> None:
        for start in range(0, args.samples, args.batch_size):
            count = min(args.batch_size, args.samples - start)
            samples = [[compose(image=photo)["image"] for compose in baseline] for _ in range(count)]
            # the straightforward crop-major collate: stack crop k of every sample
            torch.stack([crops[k] for k in range(2) for crops in samples])
            torch.stack([crops[k] for k in range(2, 10) for crops in samples])

    def segmentation_train() -> None:
        for start in range(0, args.samples, args.batch_size):
            count = min(args.batch_size, args.samples - start)
            collate_dense([segmentation(image=seg_image, mask=seg_mask) for _ in range(count)])

    cases = {
        "decode": decode,
        "multicrop_augment": multicrop_augment,
        "multicrop_pipeline": lambda: pipeline(lambda: photo),
        "multicrop_pipeline_keyed": keyed_pipeline,
        "multicrop_pipeline_float": lambda: pipeline(lambda: photo, collate_float),
        "multicrop_end_to_end": lambda: pipeline(lambda: read_rgb(path)),
        "multicrop_baseline": multicrop_baseline,
        "segmentation_train": segmentation_train,
    }
    for fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):  # interleaved, so drifts of a shared machine hit every case alike
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    rates = {f"{name}_per_core": round(args.samples / statistics.median(t), 1) for name, t in times.items()}  # noqa: E501
    result = {
        "input": "500x375 JPEG q90 (multi-crop 2x224 + 8x96, bicubic); 683x512 image+mask (segmentation 512 crop)",
        "unit": "samples/s on one core",
        "threads": {"torch": torch.get_num_threads(), "opencv": cv2.getNumThreads()},
        "malloc_tuning": malloc_tuning,
        **rates,
        "multicrop_pipeline_vs_baseline": round(
            rates["multicrop_pipeline_per_core"] / rates["multicrop_baseline_per_core"], 2
        ),
        "target_multicrop_per_core": 250,
        "multicrop_target_met": rates["multicrop_pipeline_per_core"] >= 250,
        "multicrop_keyed_target_met": rates["multicrop_pipeline_keyed_per_core"] >= 250,
        "keyed_vs_unkeyed": round(rates["multicrop_pipeline_keyed_per_core"] / rates["multicrop_pipeline_per_core"], 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
