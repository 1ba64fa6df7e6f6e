"""Train-step speed of the two stochastic-depth implementations at a recipe drop-path rate.

    .venv/bin/python experiments/benchmarks/stochastic_depth.py [--size small --rate 0.4 --batch_size 16]

``dinov2`` (the default, DINOv2's ``drop_add_residual_stochastic_depth``): each residual branch
runs on ``max(int(B * (1 - rate)), 1)`` random samples of the batch, scaled by
``B / kept``; the dropped samples cost nothing. ``per_sample`` (timm's ``DropPath``, DeiT III):
every sample runs every branch and a Bernoulli mask zeroes the dropped ones. Same expectation;
the first does ``1 - rate`` of the blocks' work. Both models share their weights and run
interleaved in one process; the speedup is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from backbone import make_steps, model_arguments, paired_ratio, time_call  # same folder: run as a script

from clsvit_lightning.cpu_allocator import keep_freed_memory
from clsvit_lightning.models import SIZES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arguments(parser)
    parser.add_argument("--rate", type=float, default=0.4, help="drop-path rate (DINOv2 ViT-L: 0.4)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if not 0.0 < args.rate < 1.0:
        parser.error(f"--rate must be in (0, 1), got {args.rate}")
    malloc_tuning = keep_freed_memory()
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    steps = {}
    for mode in ("dinov2", "per_sample"):
        model = SIZES[args.size](
            patch_size=args.patch_size, img_size=args.img_size, specialization=args.specialization,
            drop_path_rate=args.rate, stochastic_depth=mode,
        )  # fmt: skip
        if steps:
            model.load_state_dict(next(iter(steps.values()))[0].state_dict())
        steps[mode] = (model, make_steps(model, images)[1])
    times: dict[str, list[float]] = {mode: [] for mode in steps}
    for _, train_step in steps.values():  # warm-up
        train_step()
    for round_index in range(args.rounds):
        order = list(steps) if round_index % 2 == 0 else list(reversed(steps))
        for mode in order:
            times[mode] += time_call(steps[mode][1], 1)
    result = {
        "benchmark": "stochastic_depth",
        "model": f"vit_{args.size}/{args.patch_size}",
        "specialization": args.specialization,
        "batch_size": args.batch_size,
        "drop_path_rate": args.rate,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "malloc_tuning": malloc_tuning,
        "train_step_images_per_s": {m: args.batch_size / statistics.median(t) for m, t in times.items()},
        "speedup_dinov2_vs_per_sample": paired_ratio(times["per_sample"], times["dinov2"]),
        "blocks_work_fraction_dinov2": max(int(args.batch_size * (1 - args.rate)), 1) / args.batch_size,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
