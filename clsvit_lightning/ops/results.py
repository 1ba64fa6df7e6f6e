"""One ``results.json`` per run: the final logged metrics and the backbone's overhead and FLOPs.

The local sweep runner adds this callback to every command it runs (``--trainer.callbacks+=``) and
reads the files back; it works with any logger or none. With a W&B logger it also records the run
(id, project, mode, folder): ``ops/wandb_report.py`` resumes that run to add the probe's metrics.
``read_run_metrics`` also understands the CSV logger's ``metrics.csv`` (last value of every column),
so a run logged only that way is collected too.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from clsvit_lightning.ops.run_info import describe_backbone, find_backbone

RESULTS_NAME = "results.json"


class ResultsFile(Callback):
    """Writes ``<default_root_dir>/<filename>`` (rank 0) at the end of fit, validate and test.

    Args:
        filename: file name inside the trainer's ``default_root_dir``.
    """

    def __init__(self, filename: str = RESULTS_NAME) -> None:
        self.filename = filename

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.write(trainer, pl_module, "fit")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "validate":  # during fit, on_fit_end writes the final values
            self.write(trainer, pl_module, "validate")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.write(trainer, pl_module, "test")

    def write(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        path = Path(trainer.default_root_dir) / self.filename
        previous = json.loads(path.read_text()) if path.is_file() else {}
        metrics = dict(previous.get("metrics", {}))  # fit then test: keep both
        metrics.update({k: _to_float(v) for k, v in trainer.callback_metrics.items()})
        backbone = find_backbone(pl_module)
        if backbone is not None:
            metrics.update(describe_backbone(backbone)["summary"])
        result = {"stage": stage, "global_step": trainer.global_step, "metrics": metrics}
        checkpoint = _last_checkpoint(trainer)
        if checkpoint:  # wherever the logger put it (a W&B logger: under its save_dir)
            result["checkpoint"] = checkpoint
        elif "checkpoint" in previous:
            result["checkpoint"] = previous["checkpoint"]
        wandb_run = _wandb_run(trainer) or previous.get("wandb")
        if wandb_run:  # where a later step (the sweep's probe report) resumes this run
            result["wandb"] = wandb_run
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, sort_keys=True))


def _last_checkpoint(trainer: Trainer) -> str:
    """The trainer's ``ModelCheckpoint``'s ``last.ckpt`` if it writes one, else its best checkpoint, or ``""``."""
    callback = trainer.checkpoint_callback
    if callback is None:
        return ""
    path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
    return str(Path(path).resolve()) if path else ""


def _wandb_run(trainer: Trainer) -> dict[str, Any] | None:
    """Id, project, entity, mode, folder, name, group and tags of the trainer's W&B run, if it logs to one."""
    from lightning.pytorch.loggers import WandbLogger  # noqa: PLC0415

    for logger in trainer.loggers:
        if not isinstance(logger, WandbLogger) or getattr(logger, "mode", None) == "disabled":
            continue
        run = logger.experiment
        if getattr(run, "disabled", False) or not getattr(run, "id", None):
            continue
        settings = run.settings
        return {
            "id": run.id,
            "project": run.project,
            "entity": run.entity or None,
            "mode": getattr(logger, "mode", None) or ("offline" if run.offline else "online"),
            "dir": str(Path(settings.root_dir).resolve()),
            "name": run.name,
            "group": run.group or None,
            "tags": list(run.tags or ()),
            "sweep_id": getattr(run, "sweep_id", None) or None,
        }
    return None


def _to_float(value: Any) -> float:
    return float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)


def last_csv_values(path: Path) -> dict[str, float]:
    """Last non-empty value of every numeric column of a CSV logger's ``metrics.csv``."""
    values: dict[str, float] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key, text in row.items():
                if key in ("step", "epoch") or text in ("", None):
                    continue
                try:
                    values[key] = float(text)
                except ValueError:
                    continue
    return values


def read_run_metrics(run_dir: str | Path) -> dict[str, float]:
    """Every metric a run folder holds: ``metrics.csv`` files first, then ``results.json`` (wins).

    Shallower files are read last, so the run's own ``results.json`` overrides what a logger
    folder below it recorded under the same name.
    """
    run_dir = Path(run_dir)
    metrics: dict[str, float] = {}

    def deepest_first(paths):  # noqa: ANN001, ANN202
        return sorted(paths, key=lambda p: (-len(p.parts), str(p)))

    for path in deepest_first(run_dir.rglob("metrics.csv")):
        metrics.update(last_csv_values(path))
    for path in deepest_first(run_dir.rglob(RESULTS_NAME)):
        metrics.update(json.loads(path.read_text()).get("metrics", {}))
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not math.isnan(v)}
