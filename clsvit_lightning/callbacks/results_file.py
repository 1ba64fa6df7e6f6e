"""One ``results.json`` per run: the final logged metrics and the backbone's overhead and FLOPs.

Every stage of the study engine (``study/engine.py``: the demo, the proxy, the local sweep) gets
this callback (``--trainer.callbacks+=``), and the engine reads the files back
(``ops/results.py``); it works with any logger or none. With a W&B logger it also records the run
(id, project, mode, folder): ``ops/wandb_report.py`` resumes that run to add the probe's metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from clsvit_lightning.ops.results import RESULTS_NAME
from clsvit_lightning.ops.run_info import describe_backbone, find_backbone


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
