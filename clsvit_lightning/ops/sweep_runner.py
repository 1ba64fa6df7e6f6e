"""Run a sweep's combinations one after another, locally, and collect their metrics.

Each combination gets ``<out>/runs/<NNN>-<params>/`` with one folder per stage:
``pretrain/`` (the sweep's own command) and, when probe configs are given, ``probe/`` (a
``clsvit fit`` of the dense probe on the pretraining run's last checkpoint, with the sweep's
backbone arguments so the architectures match). Every stage gets the ``ResultsFile`` callback and
``WANDB_MODE=offline`` (unless the environment says otherwise): no W&B server is involved.
Finished combinations (``status.json`` = done) are skipped, so an interrupted sweep continues. A
stage that stopped for a SLURM requeue (its folder holds ``REQUEUED``, see
``ops/slurm_requeue.py``) exits 0 without having finished: the combination is left ``requeued``,
its later stages do not run, and the next invocation resumes it from the saved checkpoint.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clsvit_lightning.models.checkpoint import newest_checkpoint
from clsvit_lightning.ops.pareto import plot_pareto
from clsvit_lightning.ops.results import RESULTS_NAME, read_run_metrics
from clsvit_lightning.ops.slurm_requeue import REQUEUE_MARKER
from clsvit_lightning.ops.sweep_config import combination_name, expand, render_command, replace_configs

CLSVIT = [sys.executable, "-m", "clsvit_lightning.cli"]  # this interpreter, whatever `clsvit` on PATH is
RESULTS_CALLBACK = "--trainer.callbacks+=clsvit_lightning.ops.ResultsFile"
CHECKPOINT_PLACEHOLDER = "{pretrain_checkpoint}"
BACKBONE_PREFIXES = ("model.backbone.", "model.init_args.backbone.")


@dataclass
class SweepRun:
    index: int
    name: str
    params: dict[str, Any]
    run_dir: Path
    stages: dict[str, list[str]]  # stage name -> argv
    status: str = "pending"
    metrics: dict[str, float] = field(default_factory=dict)


def plan_sweep(
    config: Mapping[str, Any],
    out: str | Path,
    base_configs: list[str] | None = None,
    probe_configs: list[str] | None = None,
    seed: int = 0,
    count: int | None = None,
    pretrain_args: Sequence[str] = (),
    probe_args: Sequence[str] = (),
) -> list[SweepRun]:
    """One :class:`SweepRun` per combination, with the exact argv of each stage.

    ``pretrain_args``/``probe_args`` go after each stage's own arguments (a dataset root, a
    shorter schedule); the sweep's parameters come before them.
    """
    runs = []
    for index, params in enumerate(expand(config, seed=seed, count=count)):
        name = combination_name(index, params)
        run_dir = Path(out) / "runs" / name
        pretrain = render_command(
            config.get("command", ["${env}", "${interpreter}", "${program}", "${args}"]),
            params,
            program=config.get("program"),
            interpreter=[sys.executable],
            executables={"clsvit": CLSVIT},
            environ=os.environ,
        )
        if base_configs:
            pretrain = replace_configs(pretrain, base_configs)
        root = f"--trainer.default_root_dir={run_dir / 'pretrain'}"
        stages = {"pretrain": [*pretrain, *pretrain_args, root, RESULTS_CALLBACK]}
        if probe_configs:
            backbone_args = [f"--{k}={v}" for k, v in params.items() if k.startswith(BACKBONE_PREFIXES)]
            stages["probe"] = [
                *CLSVIT, "fit", *(a for c in probe_configs for a in ("--config", c)), *backbone_args,
                f"--model.init_args.pretrained={CHECKPOINT_PLACEHOLDER}", *probe_args,
                f"--trainer.default_root_dir={run_dir / 'probe'}", RESULTS_CALLBACK,
            ]  # fmt: skip
        runs.append(SweepRun(index, name, dict(params), run_dir, stages))
    return runs


def latest_checkpoint(folder: Path) -> Path:
    """The pretraining checkpoint the probe starts from.

    The one ``ResultsFile`` recorded (the run's ``ModelCheckpoint``, wherever its logger put it,
    e.g. under a W&B ``save_dir``); else the newest ``last*.ckpt`` under ``folder``, else its newest ``.ckpt``.
    """
    results = folder / RESULTS_NAME
    recorded = json.loads(results.read_text()).get("checkpoint") if results.is_file() else None
    if recorded and Path(recorded).is_file():
        return Path(recorded)
    try:
        return newest_checkpoint(folder)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no checkpoint under {folder}; does the pretraining config save one (ModelCheckpoint)?"
        ) from None


def run_one(run: SweepRun, environ: Mapping[str, str], rerun: bool = False) -> None:
    """Run the stages of one combination in order; stop at the first failure (recorded, not raised).

    A stage that finished before (``<stage>.done``) is not run again unless ``rerun``.
    """
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "params.json").write_text(json.dumps(run.params, indent=2))
    for stage, argv in run.stages.items():
        done_file = run.run_dir / f"{stage}.done"
        if done_file.is_file() and not rerun:
            continue
        done_file.unlink(missing_ok=True)
        marker = run.run_dir / stage / REQUEUE_MARKER
        marker.unlink(missing_ok=True)  # left by an earlier requeue: only this launch's own counts
        if CHECKPOINT_PLACEHOLDER in " ".join(argv):
            try:
                checkpoint = str(latest_checkpoint(run.run_dir / "pretrain"))
            except FileNotFoundError as error:
                run.status = f"failed: {error}"
                break
            argv = [a.replace(CHECKPOINT_PLACEHOLDER, checkpoint) for a in argv]
        log_path = run.run_dir / f"{stage}.log"
        (run.run_dir / f"{stage}.cmd").write_text(shlex.join(argv) + "\n")
        with log_path.open("w") as log:
            code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=dict(environ), check=False).returncode
        if code:
            run.status = f"failed: {stage} exited with {code} (see {log_path})"
            break
        if marker.is_file():
            run.status = f"requeued: {stage} stopped for a SLURM requeue; the next run of the sweep resumes it"
            break
        done_file.touch()
    else:
        run.status = "done"
    (run.run_dir / "status.json").write_text(json.dumps({"status": run.status}))


def run_sweep(runs: list[SweepRun], sweep_name: str, rerun: bool = False, log=print) -> None:  # noqa: ANN001
    environ = dict(os.environ)
    environ.setdefault("WANDB_MODE", "offline")  # a local sweep never talks to a W&B server
    environ.setdefault("WANDB_RUN_GROUP", sweep_name)  # offline runs are not attached to a sweep: group them
    for run in runs:
        status_file = run.run_dir / "status.json"
        if not rerun and status_file.is_file() and json.loads(status_file.read_text()).get("status") == "done":
            run.status = "done"
            log(f"[{run.index + 1}/{len(runs)}] {run.name}: done before, skipped")
            continue
        log(f"[{run.index + 1}/{len(runs)}] {run.name}: running {', '.join(run.stages)}")
        run_one(run, environ, rerun)
        log(f"[{run.index + 1}/{len(runs)}] {run.name}: {run.status}")
        if run.status.startswith("requeued"):
            log("stopping: the SLURM job is being requeued; the restarted job continues this sweep")
            break


def collect(
    runs: list[SweepRun], out: str | Path, x_metric: str, y_metric: str, main_metrics: list[str]
) -> list[dict[str, Any]]:
    """``results.csv`` (one row per run: params, main metrics, every other metric) and ``pareto.png``."""
    rows = []
    for run in runs:
        run.metrics = read_run_metrics(run.run_dir) if run.run_dir.is_dir() else {}
        rows.append({"run": run.name, "status": run.status, **run.params, **run.metrics})
    scored = [
        i for i, row in enumerate(rows) if isinstance(row.get(x_metric), float) and isinstance(row.get(y_metric), float)
    ]
    front: set[int] = set()
    if scored:
        points = [(rows[i][x_metric], rows[i][y_metric]) for i in scored]
        chosen = plot_pareto(points, [rows[i]["run"] for i in scored], Path(out) / "pareto.png", x_metric, y_metric)
        front = {scored[i] for i in chosen}
    for i, row in enumerate(rows):
        row["pareto"] = i in front
    params = list(dict.fromkeys(k for run in runs for k in run.params))
    others = sorted({k for row in rows for k in row} - {"run", "status", "pareto", *params, *main_metrics})
    columns = ["run", "status", *params, *main_metrics, "pareto", *others]
    Path(out).mkdir(parents=True, exist_ok=True)
    with (Path(out) / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return rows
