"""Linear segmentation probe speed: vanilla vs `paper`, training and sliding-window evaluation.

    .venv/bin/python experiments/benchmarks/dense.py [--img_size 512 --batch_size 2 --rounds 3]

Prints one JSON object, all measured in this process with the variants interleaved (issue 5):
* ``train_images_per_s``: a linear-probe step (frozen backbone forward, head forward/backward,
  AdamW step) on 512 px crops with 150 classes;
* ``eval_images_per_s``: the evaluation step's prediction, ``SemanticSegmentation.predict_labels``:
  sliding-window inference (crop 512, stride 341) of 512 x 683 images, window logits upsampled to
  the full image and averaged, then the per-pixel argmax, as the ADE20K protocol evaluates;
* ``time_ratio_*``: `paper` / vanilla (target <= 1.02);
* ``eval_share_outside_backbone``: 1 - (backbone time / eval time) (target <= 10 %), where the
  backbone time is the frozen feature extraction of the same windows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from clsvit_lightning.cpu_allocator import keep_freed_memory
from clsvit_lightning.evaluation.sliding_window import window_starts
from clsvit_lightning.models import vit_small
from clsvit_lightning.tasks.segmentation import SemanticSegmentation


def timed(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def stride(crop: int) -> int:
    return crop * 2 // 3  # 341 for 512, as the ADE20K protocol


def make_module(specialization: str, img_size: int) -> SemanticSegmentation:
    backbone = vit_small(patch_size=16, img_size=img_size, specialization=specialization)
    module = SemanticSegmentation(
        backbone, num_classes=150, mode="linear", inference="slide", crop_size=img_size, stride=stride(img_size)
    )
    module.optimizer = torch.optim.AdamW(module.predictor.head.parameters(), lr=1e-3, weight_decay=1e-4)
    return module.train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--img_size", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--eval_width", type=int, default=683, help="evaluation images are img_size x eval_width")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    malloc_tuning = keep_freed_memory()  # as `clsvit` does (clsvit_lightning/cpu_allocator.py)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    labels = torch.randint(0, 150, (args.batch_size, args.img_size, args.img_size))
    eval_images = torch.randn(1, 3, args.img_size, args.eval_width)
    modules = {name: make_module(name, args.img_size) for name in ("vanilla", "paper")}

    def train_step(module: SemanticSegmentation) -> None:
        logits = module.predictor(images)  # [B, 150, H, W]
        loss = F.cross_entropy(logits, labels, ignore_index=255)
        module.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        module.optimizer.step()

    @torch.no_grad()
    def evaluate(module: SemanticSegmentation) -> None:
        module.predict_labels(eval_images)

    @torch.no_grad()
    def backbone_only(module: SemanticSegmentation) -> None:
        for left in window_starts(args.eval_width, args.img_size, stride(args.img_size)):
            module.predictor.features(eval_images[..., left : left + args.img_size])

    stages = {"train": train_step, "eval": evaluate, "backbone": backbone_only}
    times = {(name, stage): [] for name in modules for stage in stages}
    for module in modules.values():  # warm-up
        for run in stages.values():
            run(module)
    for round_index in range(args.rounds):
        order = list(modules) if round_index % 2 == 0 else list(reversed(modules))
        for name in order:
            for stage, run in stages.items():
                times[(name, stage)].append(timed(lambda run=run, name=name: run(modules[name])))
    median = {key: statistics.median(values) for key, values in times.items()}
    result = {
        "benchmark": "dense",
        "malloc_tuning": malloc_tuning,
        "model": "vit_small/16",
        "img_size": args.img_size,
        "eval_image": [args.img_size, args.eval_width],
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "train_images_per_s": {n: args.batch_size / median[(n, "train")] for n in modules},
        "eval_images_per_s": {n: 1 / median[(n, "eval")] for n in modules},
        "time_ratio_train": median[("paper", "train")] / median[("vanilla", "train")],
        "time_ratio_eval": median[("paper", "eval")] / median[("vanilla", "eval")],
        "eval_share_outside_backbone": {n: 1 - median[(n, "backbone")] / median[(n, "eval")] for n in modules},
    }
    result["targets"] = {
        "time_ratio_train<=1.02": result["time_ratio_train"] <= 1.02,
        "time_ratio_eval<=1.02": result["time_ratio_eval"] <= 1.02,
        "eval_share_outside_backbone<=0.10": all(v <= 0.10 for v in result["eval_share_outside_backbone"].values()),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
