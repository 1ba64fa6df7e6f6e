"""One experiment of the paper at toy scale: pretrain, then k-NN, linear segmentation and analysis.

Each (specialization, seed) is one run of the study engine (``study/engine.py``) in this process:
its stages go through the ``clsvit`` CLI with the shipped configs (the same path a researcher takes),
with command-line overrides for the size of the run:

1. ``pretrain``: ``clsvit fit`` with ``configs/pretrain/{dinov2,tiny_synthetic}.yaml`` (a DINOv2 run);
2. ``knn``: ``clsvit validate`` with ``configs/classification/knn.yaml`` on the teacher (k-NN top-1);
3. ``segmentation``: ``clsvit fit`` with ``configs/dense/demo_synthetic_linear.yaml`` (linear
   segmentation probe, mIoU);
4. the token-interaction analysis of the teacher on validation images.

The run's folder is ``<out>/<spec>_seed<k>/``; its ``result.json`` holds the :class:`RunResult`,
so a finished run is read back instead of trained again (and an interrupted one skips its
finished stages).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clsvit_lightning.config_files import CONFIG_ROOT
from clsvit_lightning.data.synthetic import write_synthetic
from clsvit_lightning.models import VisionTransformer, load_pretrained
from clsvit_lightning.study.engine import (
    CHECKPOINT_PLACEHOLDER,
    CLSVIT,
    Run,
    run_stages,
    stage_checkpoint,
    stage_command,
    stage_metrics,
)

PRETRAIN_CONFIGS = [str(CONFIG_ROOT / "pretrain/dinov2.yaml"), str(CONFIG_ROOT / "pretrain/tiny_synthetic.yaml")]
KNN_CONFIG = str(CONFIG_ROOT / "classification/knn.yaml")
SEGMENTATION_CONFIG = str(CONFIG_ROOT / "dense/demo_synthetic_linear.yaml")
RESULT_NAME = "result.json"


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


def write_synthetic_data(data_root: str | Path, num_train: int, num_val: int) -> None:
    """The synthetic scenes in both layouts (``imagenet/``, ``ade20k/``) under ``data_root``, unless there."""
    root = Path(data_root)
    if (root / "imagenet").is_dir() and (root / "ade20k").is_dir():
        return
    summary = write_synthetic(root, ("imagenet", "ade20k"), num_train, num_val)
    print(json.dumps({key: summary[key] for key in ("out", "kinds", "num_train", "num_val", "num_classes", "seconds")}))


def run_folder(spec: str, seed: int, settings: StudySettings) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in spec).strip("_") or "vanilla"
    return Path(settings.out) / f"{slug}_seed{seed}"


def _backbone_overrides(spec: str) -> list[str]:
    return ["--model.init_args.backbone.init_args.specialization", spec]


def plan_run(spec: str, seed: int, settings: StudySettings) -> Run:
    """The three ``clsvit`` stages of one (specialization, seed), for the engine."""
    run_dir = run_folder(spec, seed, settings)
    data = Path(settings.data_root)
    progress = ["--trainer.enable_progress_bar", str(settings.progress_bar).lower()]
    tiny = _tiny_backbone_args()
    pretrain = [
        *CLSVIT, "fit", *sum((["--config", c] for c in PRETRAIN_CONFIGS), []), *_backbone_overrides(spec),
        "--seed_everything", str(seed), "--trainer.max_epochs", str(settings.pretrain_epochs), *progress,
        "--trainer.logger", "false",
        "--data.init_args.root", str(data / "imagenet"),
        "--data.init_args.batch_size", str(settings.batch_size),
        "--data.init_args.num_workers", str(settings.num_workers),
    ]  # fmt: skip
    knn = [
        *CLSVIT, "validate", "--config", KNN_CONFIG, *_backbone_overrides(spec),
        *sum(([f"--model.init_args.backbone.init_args.{k}", str(v)] for k, v in tiny.items()), []),
        "--model.init_args.pretrained", CHECKPOINT_PLACEHOLDER, "--model.init_args.ks", "[20]",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true", *progress,
        "--data.init_args.root", str(data / "imagenet"),
        "--data.init_args.crop_size", str(tiny["img_size"]), "--data.init_args.resize_size", str(tiny["img_size"]),
        "--data.init_args.batch_size", "64", "--data.init_args.num_workers", str(settings.num_workers),
    ]  # fmt: skip
    segmentation = [
        *CLSVIT, "fit", "--config", SEGMENTATION_CONFIG, *_backbone_overrides(spec),
        "--seed_everything", str(seed), "--model.init_args.pretrained", CHECKPOINT_PLACEHOLDER,
        "--trainer.max_steps", str(settings.probe_steps), "--trainer.val_check_interval", str(settings.probe_steps),
        *progress, "--trainer.logger", "false",
        "--data.init_args.root", str(data / "ade20k"),
        "--data.init_args.num_workers", str(settings.num_workers),
    ]  # fmt: skip
    stages = {"pretrain": pretrain, "knn": knn, "segmentation": segmentation}
    stages = {stage: stage_command(argv, run_dir, stage) for stage, argv in stages.items()}
    return Run(0, run_dir.name, {"specialization": spec, "seed": seed}, run_dir, stages)


def _metric(run_dir: Path, stage: str, name: str) -> float:
    metrics = stage_metrics(run_dir, stage)
    if name not in metrics:
        raise KeyError(f"metric {name!r} was not logged by the {stage} stage; logged: {sorted(metrics)}")
    return float(metrics[name])


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
    run = plan_run(spec, seed, settings)
    cached = run.run_dir / RESULT_NAME
    if cached.is_file():
        return RunResult(**json.loads(cached.read_text()))
    run_stages(run, in_process=True)
    return finish_run(run, spec, seed, settings)


def finish_run(run: Run, spec: str, seed: int, settings: StudySettings) -> RunResult:
    """The :class:`RunResult` of a run whose stages ran: its metrics, the analysis, cached in ``result.json``."""
    if run.status != "done":  # a SLURM requeue: the next launch resumes the run
        raise RuntimeError(f"{run.run_dir}: {run.status}")
    cached = run.run_dir / RESULT_NAME
    checkpoint = stage_checkpoint(run.run_dir / "pretrain")
    post, pre = analysis_curves(spec, checkpoint, settings)
    result = RunResult(
        specialization=spec,
        seed=seed,
        # The pretrained backbone's size and cost, as its results file recorded them (ops/run_info.py).
        params=int(_metric(run.run_dir, "pretrain", "backbone/params_total")),
        overhead=_metric(run.run_dir, "pretrain", "backbone/params_overhead"),
        gflops=_metric(run.run_dir, "pretrain", "backbone/gflops_per_image"),
        knn_top1=_metric(run.run_dir, "knn", "knn/k20_top1"),
        miou=_metric(run.run_dir, "segmentation", "val/mIoU"),
        post_norm1_cls_patch=post,
        pre_norm1_cls_patch=pre,
        checkpoint=str(checkpoint),
    )
    cached.write_text(json.dumps(asdict(result), indent=2))
    return result
