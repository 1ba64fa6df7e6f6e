"""One experiment of the paper at toy scale: pretrain, then k-NN, linear segmentation and analysis.

Every stage goes through the ``clsvit`` CLI with the shipped configs (the same path a researcher
takes), with command-line overrides for the size of the run:

1. ``clsvit fit`` with ``configs/pretrain/{dinov2,tiny_synthetic}.yaml`` (a DINOv2 run);
2. ``clsvit validate`` with ``configs/classification/knn.yaml`` on the teacher (k-NN top-1);
3. ``clsvit fit`` with ``configs/dense/demo_synthetic_linear.yaml`` (linear segmentation probe, mIoU);
4. the token-interaction analysis of the teacher on validation images.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from clsvit_lightning.cli import run
from clsvit_lightning.config_files import CONFIG_ROOT
from clsvit_lightning.models import VisionTransformer, load_pretrained

PRETRAIN_CONFIGS = [str(CONFIG_ROOT / "pretrain/dinov2.yaml"), str(CONFIG_ROOT / "pretrain/tiny_synthetic.yaml")]
KNN_CONFIG = str(CONFIG_ROOT / "classification/knn.yaml")
SEGMENTATION_CONFIG = str(CONFIG_ROOT / "dense/demo_synthetic_linear.yaml")


@dataclass
class StudySettings:
    data_root: str = "data/synthetic"
    out: str = "outputs/demo"
    pretrain_epochs: int = 4
    probe_steps: int = 300
    batch_size: int = 32
    num_workers: int = 2
    analysis_images: int = 8
    progress_bar: bool = True


@dataclass
class RunResult:
    specialization: str
    seed: int
    params: int
    overhead: float
    gflops: float
    knn_top1: float
    miou: float
    post_norm1_cls_patch: list[float] = field(default_factory=list)  # per block, after norm1
    pre_norm1_cls_patch: list[float] = field(default_factory=list)
    checkpoint: str = ""


def _metric(cli: object, name: str) -> float:
    value = cli.trainer.callback_metrics.get(name)  # type: ignore[attr-defined]
    if value is None:
        raise KeyError(f"metric {name!r} was not logged; logged: {sorted(cli.trainer.callback_metrics)}")  # type: ignore[attr-defined]
    return float(value)


def _backbone_overrides(spec: str) -> list[str]:
    return ["--model.init_args.backbone.init_args.specialization", spec]


def pretrain(spec: str, seed: int, settings: StudySettings, run_dir: Path) -> Path:
    run([
        "fit", *sum((["--config", c] for c in PRETRAIN_CONFIGS), []), *_backbone_overrides(spec),
        "--seed_everything", str(seed), "--trainer.max_epochs", str(settings.pretrain_epochs),
        "--trainer.default_root_dir", str(run_dir / "pretrain"),
        "--trainer.enable_progress_bar", str(settings.progress_bar).lower(),
        "--trainer.logger", "false",
        "--data.init_args.root", str(Path(settings.data_root) / "imagenet"),
        "--data.init_args.batch_size", str(settings.batch_size),
        "--data.init_args.num_workers", str(settings.num_workers),
    ])  # fmt: skip
    checkpoints = sorted((run_dir / "pretrain").rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise FileNotFoundError(f"pretraining wrote no last.ckpt under {run_dir / 'pretrain'}")
    return checkpoints[-1]


def knn_top1(spec: str, checkpoint: Path, settings: StudySettings, run_dir: Path) -> float:
    tiny = _tiny_backbone_args()
    cli = run([
        "validate", "--config", KNN_CONFIG, *_backbone_overrides(spec),
        *sum(([f"--model.init_args.backbone.init_args.{k}", str(v)] for k, v in tiny.items()), []),
        "--model.init_args.pretrained", str(checkpoint), "--model.init_args.ks", "[20]",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
        "--trainer.default_root_dir", str(run_dir / "knn"),
        "--trainer.enable_progress_bar", str(settings.progress_bar).lower(),
        "--data.init_args.root", str(Path(settings.data_root) / "imagenet"),
        "--data.init_args.crop_size", str(tiny["img_size"]), "--data.init_args.resize_size", str(tiny["img_size"]),
        "--data.init_args.batch_size", "64", "--data.init_args.num_workers", str(settings.num_workers),
    ])  # fmt: skip
    return _metric(cli, "knn/k20_top1")


def segmentation_miou(spec: str, checkpoint: Path, seed: int, settings: StudySettings, run_dir: Path) -> float:
    cli = run([
        "fit", "--config", SEGMENTATION_CONFIG, *_backbone_overrides(spec),
        "--seed_everything", str(seed), "--model.init_args.pretrained", str(checkpoint),
        "--trainer.max_steps", str(settings.probe_steps), "--trainer.val_check_interval", str(settings.probe_steps),
        "--trainer.default_root_dir", str(run_dir / "segmentation"),
        "--trainer.enable_progress_bar", str(settings.progress_bar).lower(),
        "--trainer.logger", "false",
        "--data.init_args.root", str(Path(settings.data_root) / "ade20k"),
        "--data.init_args.num_workers", str(settings.num_workers),
    ])  # fmt: skip
    return _metric(cli, "val/mIoU")


def _tiny_backbone_args() -> dict[str, object]:
    import yaml  # noqa: PLC0415

    config = yaml.safe_load(Path(PRETRAIN_CONFIGS[1]).read_text())
    args = config["model"]["init_args"]["backbone"]["init_args"]
    return {k: args[k] for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads")}


def analysis_curves(spec: str, checkpoint: Path, settings: StudySettings) -> tuple[list[float], list[float]]:
    from clsvit_lightning.analysis import analyze_backbone, load_images  # noqa: PLC0415

    model = VisionTransformer(**_tiny_backbone_args(), specialization=spec)
    load_pretrained(model, checkpoint)
    images, _ = load_images(
        Path(settings.data_root) / "ade20k" / "ADEChallengeData2016" / "images" / "validation",
        model.patch_size * (_tiny_backbone_args()["img_size"] // model.patch_size),
        model.patch_size,
        settings.analysis_images,
    )
    report = analyze_backbone(model, images).report
    post = [block["norm1"]["post"]["cls_patch"] for block in report["blocks"]]
    pre = [block["norm1"]["pre"]["cls_patch"] for block in report["blocks"]]
    return post, pre


def run_one(spec: str, seed: int, settings: StudySettings) -> RunResult:
    """Pretrain + evaluate one (specialization, seed); results are cached in ``result.json``."""
    run_dir = Path(settings.out) / f"{_slug(spec)}_seed{seed}"
    cached = run_dir / "result.json"
    if cached.is_file():
        return RunResult(**json.loads(cached.read_text()))
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = pretrain(spec, seed, settings, run_dir)
    with torch.device("meta"):
        model = VisionTransformer(**_tiny_backbone_args(), specialization=spec)
    count = model.parameter_count()
    post, pre = analysis_curves(spec, checkpoint, settings)
    result = RunResult(
        specialization=spec,
        seed=seed,
        params=count.total,
        overhead=count.overhead,
        gflops=model.flops_per_image() / 1e9,
        knn_top1=knn_top1(spec, checkpoint, settings, run_dir),
        miou=segmentation_miou(spec, checkpoint, seed, settings, run_dir),
        post_norm1_cls_patch=post,
        pre_norm1_cls_patch=pre,
        checkpoint=str(checkpoint),
    )
    cached.write_text(json.dumps(asdict(result), indent=2))
    return result


def _slug(spec: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in spec).strip("_") or "vanilla"


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
