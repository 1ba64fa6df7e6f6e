"""GPU-hours of every run in experiments/paper/rows.yaml, from FLOPs (no GPU was available to measure).

    .venv/bin/python experiments/paper/compute_estimate.py [--format markdown|json] [--gpu a100|h100] [--mfu 0.4]
    .venv/bin/python experiments/paper/compute_estimate.py --table continue   # configs/pretrain/continue_*.yaml

GPU-hours = images processed x training FLOPs per image / (peak bf16 FLOP/s x MFU) / 3600, where

* images: iterations x global batch, iterations = ``max_epochs`` x iterations per epoch. An epoch is
  ``trainer.limit_train_batches`` iterations when set (the DINOv2 recipe: 1250, DINOv2's
  OFFICIAL_EPOCH_LENGTH) and the dataset has that many batches, else one pass over the training set
  (DeiT III). Pretraining data is ImageNet-1k (the configs' ImageFolder layout; the paper's data is
  not known).
* FLOPs per image: the backbone's forward FLOPs (``count_flops_per_image``, the same count as
  ``clsvit summary``: matmuls, convolutions, attention) at each crop size, plus the projection heads.
  DINOv2: student on 2 global + n local crops, forward + backward = 3 x forward; EMA teacher forward on
  the 2 global crops; DINO head on every crop's [CLS], iBOT head on the expected masked patches
  (mask_sample_probability x mean(mask_ratio_range) of the global-crop patches), for student and teacher.
  DeiT III: 3 x forward at the training crop plus the classifier. Optimizer, norms, losses, data
  loading and communication are not counted; MFU absorbs them.
* Continued pretraining (``--table continue``): the iterations of ``configs/pretrain/continue.yaml``
  (10,000), of which the head warm-up's cost the student's backbone forward only (no backward: it
  is frozen), the heads forward + backward and the teacher forward.
* Evaluations (frozen backbone, forward only): the probe's training images x forward FLOPs at the crop,
  plus validation (every val_check_interval) with sliding windows, TTA scales and flips on images of a
  typical size per dataset (stated in DATASETS below).

The MFU is an assumption, not a measurement: 40 % is typical of well-tuned bf16 ViT-B/L training with
fused attention; small models (ViT-S, 96-px local crops) usually reach less. Measure on your GPU with
experiments/benchmarks/backbone.py / pretrain_step.py and pass --mfu.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from clsvit_lightning.models import (
    VisionTransformer,
    count_flops_per_image,
    count_parameters,
    count_training_flops_per_image,
)
from clsvit_lightning.models.dino_head import DINOHead

ROOT = Path(__file__).resolve().parents[2]
ROWS = ROOT / "experiments/paper/rows.yaml"
# Dense bf16 tensor-core peaks (no sparsity) from the vendors' data sheets: A100 SXM 312, H100 SXM 989 TFLOP/s.
PEAK_FLOPS = {"a100": 312e12, "h100": 989e12}
# Dataset sizes (the public splits) and, for the sliding-window cost, a typical evaluation image (h, w).
DATASETS = {
    "imagenet": {"train": 1_281_167, "val": 50_000, "image": (224, 224)},
    "ade20k": {"train": 20_210, "val": 2_000, "image": (512, 683)},  # short side resized to 512, 4:3
    "voc2012": {"train": 1_464, "val": 1_449, "image": (512, 683)},
    "cityscapes": {"train": 2_975, "val": 500, "image": (1024, 2048)},
    "nyu": {"train": 24_231, "val": 654, "image": (480, 640)},
}
GPUS_PER_NODE = 8
DINOV2_SBATCH_GPUS = 16  # experiments/slurm/pretrain.sbatch: --nodes=2 x --gpus-per-node=8


def deep_merge(base: dict, overlay: dict) -> dict:
    out = dict(base)
    for key, value in overlay.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_configs(paths: list[str]) -> dict:
    config: dict = {}
    for path in paths:
        config = deep_merge(config, yaml.safe_load((ROOT / path).read_text()) or {})
    return config


def backbone(config: dict) -> VisionTransformer:
    args = config["model"]["init_args"]["backbone"]["init_args"]
    with torch.device("meta"):
        return VisionTransformer(**args)


def forward_flops(model: VisionTransformer, height: int, width: int | None = None) -> float:
    """Forward FLOPs at ``height x width``, padded up to a multiple of the patch (as DINOv2 centre-pads)."""
    patch = model.patch_size
    pad = lambda side: patch * math.ceil(side / patch)  # noqa: E731
    return _cached_flops(json.dumps(model.config, sort_keys=True, default=str), pad(height), pad(width or height))


@functools.cache
def _cached_flops(config: str, height: int, width: int) -> float:
    # Runs share architectures and crop sizes; counting each once keeps the script to seconds.
    with torch.device("meta"):
        model = VisionTransformer(**json.loads(config))
    return float(count_flops_per_image(model, (height, width)))


def student_forward_flops(model: VisionTransformer, side: int, batch: int) -> float:
    """Forward FLOPs per image of a student batch of ``batch`` crops: batch-subset stochastic depth
    runs each block's branches on part of the batch (``Block.work_fraction``), the patch
    embedding on all of it."""
    side = model.patch_size * math.ceil(side / model.patch_size)
    return count_training_flops_per_image(model, batch, side, forward_flops=forward_flops(model, side))


@functools.cache
def head_flops_per_token(embed_dim: int, prototypes: int, hidden: int, bottleneck: int) -> float:
    with torch.device("meta"):
        head = DINOHead(embed_dim, prototypes, hidden, bottleneck)
        tokens = torch.empty(1, embed_dim)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        head(tokens)
    return float(counter.get_total_flops())


def dinov2_flops_per_image(config: dict) -> float:
    """Training FLOPs per image: student forward + backward (3 x forward), teacher forward."""
    parts = dinov2_flop_parts(config)
    return 3 * (parts["student_backbone"] + parts["student_heads"]) + parts["teacher"]


def dinov2_flop_parts(config: dict) -> dict[str, float]:
    """Forward FLOPs per image of the student's backbone, the student's heads and the teacher (backbone + heads)."""
    model, data, task = backbone(config), config["data"]["init_args"], config["model"]["init_args"]
    crop, local = data["crop_size"], data["local_crop_size"]
    num_local, batch = data["num_local_crops"], data["batch_size"]  # per GPU: the student's forward batches
    global_fwd = forward_flops(model, crop)  # the teacher: every block on every crop
    student_global = student_forward_flops(model, crop, 2 * batch)
    student_local = student_forward_flops(model, local, num_local * batch)
    patches = (crop // model.patch_size) ** 2
    masked = data["mask_sample_probability"] * sum(data["mask_ratio_range"]) / 2 * patches * 2  # 2 global crops
    dino = head_flops_per_token(
        model.embed_dim, task["num_prototypes"], task["head_hidden_dim"], task["head_bottleneck_dim"]
    )
    if task["separate_ibot_head"]:
        ibot_sizes = (task["ibot_num_prototypes"], task["ibot_head_hidden_dim"], task["ibot_head_bottleneck_dim"])
    else:
        ibot_sizes = (task["num_prototypes"], task["head_hidden_dim"], task["head_bottleneck_dim"])
    ibot = head_flops_per_token(model.embed_dim, *ibot_sizes)
    return {
        "student_backbone": 2 * student_global + num_local * student_local,
        "student_heads": (2 + num_local) * dino + masked * ibot,
        "teacher": 2 * global_fwd + 2 * dino + masked * ibot,
    }


def deit3_flops_per_image(config: dict) -> float:
    model, task = backbone(config), config["model"]["init_args"]
    return 3 * (
        forward_flops(model, config["data"]["init_args"]["crop_size"]) + 2 * model.embed_dim * task["num_classes"]
    )


def windows(height: int, width: int, crop: int, stride: int) -> int:
    count = lambda side: 1 if side <= crop else math.ceil((side - crop) / stride) + 1  # noqa: E731
    return count(height) * count(width)


def evaluation_flops(evaluation: dict, model: VisionTransformer) -> float:
    """Forward FLOPs of one evaluation of a frozen backbone (probe training + its validations)."""
    config = load_configs(evaluation["configs"])
    trainer, task, data = config["trainer"], config["model"]["init_args"], config["data"]["init_args"]
    kind = data.get("dataset", "nyu" if "DepthDataModule" in config["data"]["class_path"] else "imagenet")
    sizes = DATASETS[kind]
    if kind == "imagenet":  # k-NN: one pass over train (memory bank) and val; linear: max_epochs of both
        crop = data["crop_size"]
        passes = trainer.get("max_epochs", 1) if evaluation["command"] == "fit" else 1
        return passes * (sizes["train"] + sizes["val"]) * forward_flops(model, crop)
    crop = data["crop_size"]
    height, width = (crop, crop) if isinstance(crop, int) else crop
    train = trainer["max_steps"] * data["batch_size"] * forward_flops(model, height, width)
    evaluations = trainer["max_steps"] // trainer["val_check_interval"]
    image_h, image_w = sizes["image"]
    per_image = 0.0
    if task.get("inference") == "slide":
        base = task.get("test_short_side", image_h) / image_h
        for scale in task.get("tta_scales", [1.0]):
            h, w = round(image_h * base * scale), round(image_w * base * scale)
            per_image += windows(h, w, task["crop_size"], task["stride"]) * forward_flops(model, task["crop_size"])
    else:  # whole image at once
        per_image = forward_flops(model, image_h, image_w)
    per_image *= 2 if task.get("tta_flip") else 1
    return train + evaluations * sizes["val"] * per_image


def iterations_per_epoch(trainer: dict, train_images: int, global_batch: int) -> int:
    """Lightning's epoch: every batch of the (drop_last) loader, capped by an integer ``limit_train_batches``."""
    batches = train_images // global_batch
    limit = trainer.get("limit_train_batches")
    return min(batches, limit) if isinstance(limit, int) else batches


def estimate(gpu: str, mfu: float) -> dict:
    spec = yaml.safe_load(ROWS.read_text())
    rate = PEAK_FLOPS[gpu] * mfu
    runs = {}
    for name, run in spec["runs"].items():
        recipe = spec["recipes"][run["recipe"]]
        config = load_configs([recipe["base_config"], *run["pretrain"]])
        model = backbone(config)
        epochs = config["trainer"]["max_epochs"]
        if run["recipe"] == "dinov2":
            per_image, gpus = dinov2_flops_per_image(config), DINOV2_SBATCH_GPUS
        else:
            per_image, gpus = deit3_flops_per_image(config), config["trainer"].get("num_nodes", 1) * GPUS_PER_NODE
        global_batch = gpus * config["data"]["init_args"]["batch_size"]
        iterations = epochs * iterations_per_epoch(config["trainer"], DATASETS["imagenet"]["train"], global_batch)
        images = iterations * global_batch
        evals = {key: evaluation_flops(value, model) / rate / 3600 for key, value in spec["evaluations"].items()}
        runs[name] = {
            "recipe": run["recipe"],
            "params_M": count_parameters(model).total / 1e6,
            "overhead_pct": 100 * count_parameters(model).overhead,
            "epochs": epochs,
            "global_batch": global_batch,
            "iterations": iterations,
            "train_gflops_per_image": per_image / 1e9,
            "pretrain_gpu_hours": images * per_image / rate / 3600,
            "eval_gpu_hours": evals,
        }
    return {"gpu": gpu, "mfu": mfu, "sustained_tflops": rate / 1e12, "runs": runs}


CONTINUE_BASE = ["configs/pretrain/dinov2.yaml", "configs/pretrain/continue.yaml"]
CONTINUE_OVERLAYS = {
    f"continue_{size}_{spec}{'+reg4' if registers else ''}": [
        f"configs/pretrain/continue_{size}_{spec}.yaml",
        *(["configs/pretrain/continue_reg4.yaml"] if registers else []),
    ]
    for size in ("vits14", "vitb14", "vitl14")
    for spec in ("vanilla", "paper")
    for registers in (False, True)
} | {
    f"continue_dinov3_{size}_{spec}": [f"configs/pretrain/continue_dinov3_{size}_{spec}.yaml"]
    for size in ("vits16", "vitb16", "vitl16")
    for spec in ("vanilla", "paper")
}
FROM_SCRATCH = ["configs/pretrain/dinov2.yaml", "configs/pretrain/vitl14_vanilla.yaml"]  # for comparison


def continue_estimate(gpu: str, mfu: float) -> dict:
    """GPU-hours of each continued-pretraining recipe (the head warm-up without backbone backward)."""
    rate = PEAK_FLOPS[gpu] * mfu
    runs = {}
    for name, overlays in CONTINUE_OVERLAYS.items():
        config = load_configs([*CONTINUE_BASE, *overlays])
        model, trainer, task = backbone(config), config["trainer"], config["model"]["init_args"]
        parts = dinov2_flop_parts(config)
        global_batch = DINOV2_SBATCH_GPUS * config["data"]["init_args"]["batch_size"]
        per_epoch = iterations_per_epoch(trainer, DATASETS["imagenet"]["train"], global_batch)
        iterations = trainer["max_epochs"] * per_epoch
        head_iterations = round(task["head_warmup_epochs"] * per_epoch)
        full = 3 * (parts["student_backbone"] + parts["student_heads"]) + parts["teacher"]
        head_phase = parts["student_backbone"] + 3 * parts["student_heads"] + parts["teacher"]
        flops = global_batch * (head_iterations * head_phase + (iterations - head_iterations) * full)
        runs[name] = {
            "configs": [*CONTINUE_BASE, *overlays],
            "params_M": count_parameters(model).total / 1e6,
            "overhead_pct": 100 * count_parameters(model).overhead,
            "global_batch": global_batch,
            "iterations": iterations,
            "head_warmup_iterations": head_iterations,
            "train_gflops_per_image": full / 1e9,
            "gpu_hours": flops / rate / 3600,
        }
    scratch = load_configs(FROM_SCRATCH)
    scratch_batch = DINOV2_SBATCH_GPUS * scratch["data"]["init_args"]["batch_size"]
    scratch_iterations = scratch["trainer"]["max_epochs"] * iterations_per_epoch(
        scratch["trainer"], DATASETS["imagenet"]["train"], scratch_batch
    )
    scratch_hours = scratch_iterations * scratch_batch * dinov2_flops_per_image(scratch) / rate / 3600
    return {
        "gpu": gpu,
        "mfu": mfu,
        "sustained_tflops": rate / 1e12,
        "runs": runs,
        "from_scratch_vitl14_gpu_hours": scratch_hours,
        "from_scratch_vitl14_iterations": scratch_iterations,
    }


def continue_markdown(result: dict) -> str:
    lines = [
        f"GPU-hours on {result['gpu'].upper()} at {100 * result['mfu']:.0f} % MFU "
        f"({result['sustained_tflops']:.0f} TFLOP/s sustained); computed by experiments/paper/compute_estimate.py "
        "--table continue.",
        "",
        "| recipe (after dinov2.yaml + continue.yaml) | params (M) | overhead | global batch | iterations "
        "(head warm-up) | train GFLOPs/img | GPU-h |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in result["runs"].items():
        lines.append(
            f"| `{name}` | {r['params_M']:.1f} | +{r['overhead_pct']:.2f} % | {r['global_batch']} | "
            f"{r['iterations']:,} ({r['head_warmup_iterations']:,}) | {r['train_gflops_per_image']:.0f} | "
            f"{r['gpu_hours']:,.1f} |"
        )
    lines += [
        "",
        f"For scale: DINOv2's ViT-L/14 recipe from scratch (`vitl14_vanilla.yaml`, "
        f"{result['from_scratch_vitl14_iterations']:,} iterations) is {result['from_scratch_vitl14_gpu_hours']:,.0f} "
        "GPU-h on the same assumptions.",
    ]
    return "\n".join(lines)


def markdown(result: dict) -> str:
    spec = yaml.safe_load(ROWS.read_text())
    lines = [
        f"GPU-hours on {result['gpu'].upper()} at {100 * result['mfu']:.0f} % MFU "
        f"({result['sustained_tflops']:.0f} TFLOP/s sustained); computed by experiments/paper/compute_estimate.py.",
        "",
        "| run | params (M) | overhead | epochs | global batch | iterations | train GFLOPs/img | pretrain GPU-h | "
        "eval GPU-h (ablation set / full set) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    evaluation_sets = {row["run"]: set() for row in spec["rows"]}
    for row in spec["rows"]:  # a run read by a main-table row and by ablation rows gets the full set once
        evaluation_sets[row["run"]] |= set(spec["evaluation_sets"][row["evaluations"]])
    total_pretrain = sum(r["pretrain_gpu_hours"] for r in result["runs"].values())
    total_eval = sum(
        sum(result["runs"][run]["eval_gpu_hours"][e] for e in evaluations)
        for run, evaluations in evaluation_sets.items()
    )
    for name, r in result["runs"].items():
        ablation = sum(r["eval_gpu_hours"][e] for e in spec["evaluation_sets"]["ablation"])
        full = sum(r["eval_gpu_hours"][e] for e in spec["evaluation_sets"]["full"])
        lines.append(
            f"| `{name}` | {r['params_M']:.1f} | +{r['overhead_pct']:.2f} % | {r['epochs']} | {r['global_batch']} | "
            f"{r['iterations']:,} | {r['train_gflops_per_image']:.0f} | {r['pretrain_gpu_hours']:,.0f} | "
            f"{ablation:,.1f} / {full:,.1f} |"
        )
    lines += [
        "",
        f"All {len(result['runs'])} runs once: {total_pretrain:,.0f} GPU-h of pretraining + {total_eval:,.0f} GPU-h "
        "of the evaluations their rows ask for.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=["markdown", "json"], default="markdown")
    parser.add_argument("--gpu", choices=sorted(PEAK_FLOPS), default="a100")
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOP utilisation, an assumption")
    parser.add_argument(
        "--table", choices=["paper", "continue"], default="paper",
        help="paper: the runs of rows.yaml; continue: the continued-pretraining recipes (configs/pretrain/continue_*)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not 0 < args.mfu <= 1:
        parser.error(f"--mfu {args.mfu}: expected a fraction in (0, 1]")
    if args.table == "continue":
        result = continue_estimate(args.gpu, args.mfu)
        print(continue_markdown(result) if args.format == "markdown" else json.dumps(result, indent=2))
        return result
    result = estimate(args.gpu, args.mfu)
    print(markdown(result) if args.format == "markdown" else json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
