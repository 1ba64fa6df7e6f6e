"""DINOv2 pretraining step on CPU: vanilla vs `paper`, DINO-only, and a lightly-style reference step.

    .venv/bin/python experiments/benchmarks/pretrain_step.py [--batch_size 8 --rounds 3]

Shapes (issue 4): vit_small/16, 2 x 224 global + 8 x 96 local crops, batch 8, 65 536 prototypes.
Prints one JSON object, everything measured in this process with the variants interleaved:
* ``step_s``: median seconds per full step (teacher, student, heads, losses, backward, AdamW, EMA);
* ``time_ratio_paper_vs_vanilla`` (target <= 1.02): the median of the per-round ratios;
* ``reference_lightly_style_s``: a DINO-only step written the way lightly's examples write it (one
  backbone call per view, DINO loss per pair, no iBOT, no KoLeo), for comparison; targets: the full
  DINOv2 step <= it, and our DINO-only configuration <= 0.8 x it;
* ``profile_split``: share of the vanilla step spent in each stage, from ``torch.profiler``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from backbone import paired_ratio  # same folder: run as a script
from torch.profiler import ProfilerActivity, profile, record_function

from clsvit_lightning.cpu_allocator import keep_freed_memory
from clsvit_lightning.data.transforms.masking import BlockMaskGenerator, stratified_masks
from clsvit_lightning.losses import DINOLoss
from clsvit_lightning.models import vit_small
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining
from clsvit_lightning.training.param_groups import build_param_groups


def make_module(specialization: str, num_prototypes: int, dino_only: bool = False) -> DINOv2Pretraining:
    weights = dict(ibot_loss_weight=0.0, koleo_loss_weight=0.0) if dino_only else {}
    module = DINOv2Pretraining(
        vit_small(patch_size=16, specialization=specialization, drop_path_rate=0.1),
        num_prototypes=num_prototypes,
        **weights,
    )
    module.schedules = {name: np.array([value]) for name, value in
                        [("teacher_temperature", 0.04), ("teacher_momentum", 0.992)]}  # fmt: skip
    module.optimizer = torch.optim.AdamW(
        [{k: v for k, v in g.items() if k == "params"} for g in build_param_groups(dict(module.student.items()))],
        lr=1e-4,
    )
    return module.train()


def make_batch(batch_size: int, num_local: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    masks = stratified_masks(BlockMaskGenerator(14, 14), 2 * batch_size, (0.1, 0.5), 0.5, np.random.default_rng(seed))
    return {
        "global_crops": torch.randn(2, batch_size, 3, 224, 224, generator=generator),  # [G, B, 3, H, W]
        "local_crops": torch.randn(num_local, batch_size, 3, 96, 96, generator=generator),  # [L, B, 3, h, w]
        "masks": torch.from_numpy(masks).view(2, batch_size, -1),  # [G, B, N]
    }


def our_step(module: DINOv2Pretraining, batch: dict[str, torch.Tensor]) -> None:
    with record_function("teacher"):
        teacher = module.get_teacher_output(batch["global_crops"], batch["masks"], 0.04)
    with record_function("student"):
        student = module.get_student_output(batch["global_crops"], batch["local_crops"], batch["masks"])
    with record_function("losses"):
        loss = module.compute_losses(student, teacher, batch["masks"])["total"]
    with record_function("backward"):
        module.optimizer.zero_grad(set_to_none=True)
        loss.backward()
    with record_function("optimizer"):
        module.configure_gradient_clipping(module.optimizer)
        module.optimizer.step()
    with record_function("ema"):
        module.update_teacher(0.992)


def lightly_style_step(module: DINOv2Pretraining, batch: dict[str, torch.Tensor], loss_fn: DINOLoss) -> None:
    """One backbone call per view; teacher on the globals; DINO loss; AdamW; EMA."""
    views = list(batch["global_crops"]) + list(batch["local_crops"])
    with torch.no_grad():
        teacher_out = [
            torch.softmax(module.teacher["dino_head"](module.teacher["backbone"](v)) / 0.04, dim=-1)
            for v in batch["global_crops"]
        ]
    student_out = [module.student["dino_head"](module.student["backbone"](v)) for v in views]
    loss = loss_fn(torch.stack(student_out), torch.stack(teacher_out))
    module.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    module.optimizer.step()
    module.update_teacher(0.992)


def profile_split(module: DINOv2Pretraining, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        our_step(module, batch)
    stages = ("teacher", "student", "losses", "backward", "optimizer", "ema")
    times = {e.key: e.cpu_time_total for e in prof.key_averages() if e.key in stages}
    total = sum(times.values())
    return {stage: round(times.get(stage, 0.0) / total, 4) for stage in stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_local_crops", type=int, default=8)
    parser.add_argument("--num_prototypes", type=int, default=65536)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    malloc_tuning = keep_freed_memory()  # as `clsvit` does (clsvit_lightning/cpu_allocator.py)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = make_batch(args.batch_size, args.num_local_crops)
    variants = {
        "vanilla": make_module("vanilla", args.num_prototypes),
        "paper": make_module("paper", args.num_prototypes),
        "vanilla_dino_only": make_module("vanilla", args.num_prototypes, dino_only=True),
    }
    dino_loss = DINOLoss()
    runners = {name: (lambda m=m: our_step(m, batch)) for name, m in variants.items()}
    runners["reference_lightly_style"] = lambda: lightly_style_step(variants["vanilla_dino_only"], batch, dino_loss)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():  # warm-up
        run()
    for round_index in range(args.rounds):
        order = list(runners) if round_index % 2 == 0 else list(reversed(runners))
        for name in order:
            start = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - start)
    step = {name: statistics.median(values) for name, values in times.items()}
    reference = step["reference_lightly_style"]
    result = {
        "benchmark": "pretrain_step",
        "malloc_tuning": malloc_tuning,
        "model": "vit_small/16",
        "crops": f"2x224 + {args.num_local_crops}x96",
        "batch_size": args.batch_size,
        "num_prototypes": args.num_prototypes,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "step_s": step,
        # Median of the per-round ratios: vanilla and paper run next to each other in every round, so
        # a drift of the shared machine that spans rounds cancels (a ratio of medians does not).
        "time_ratio_paper_vs_vanilla": paired_ratio(times["paper"], times["vanilla"]),
        "time_ratio_paper_vs_vanilla_of_medians": step["paper"] / step["vanilla"],
        "full_step_vs_reference": step["vanilla"] / reference,
        "dino_only_vs_reference": step["vanilla_dino_only"] / reference,
        "profile_split": profile_split(variants["vanilla"], batch),
    }
    result["targets"] = {
        "time_ratio_paper_vs_vanilla<=1.02": result["time_ratio_paper_vs_vanilla"] <= 1.02,
        "full_step_vs_reference<=1.0": result["full_step_vs_reference"] <= 1.0,
        "dino_only_vs_reference<=0.8": result["dino_only_vs_reference"] <= 0.8,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
