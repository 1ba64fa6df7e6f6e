"""Run a sweep's combinations one after another, locally, and collect their metrics.

Each combination gets ``<out>/runs/<NNN>-<params>/`` with one folder per stage:
``pretrain/`` (the sweep's own command) and, when probe configs are given, ``probe/`` (a
``clsvit fit`` of the dense probe on the pretraining run's last checkpoint, with the sweep's
backbone arguments so the architectures match) and ``report`` (``ops/wandb_report.py``: the probe's
metrics written into the pretraining's W&B run, when it logged to one). Every stage gets the
``ResultsFile`` callback and, in a local sweep, ``WANDB_MODE=offline`` (unless the environment says
otherwise): no W&B server is involved. A sweep whose command is ``clsvit sweep-run`` (what ``wandb
agent`` runs: the same three stages for one combination, ``commands/sweep_run.py``) is planned from
that command's own arguments: ``--config`` files and overrides for the pretraining, ``--probe_config``
and ``--probe.<key>=<value>`` for the probe.
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
from clsvit_lightning.ops.sweep_config import (
    DEFAULT_COMMAND,
    SweepConfigError,
    combination_name,
    expand,
    render_command,
    replace_configs,
)

CLSVIT = [sys.executable, "-m", "clsvit_lightning.cli"]  # this interpreter, whatever `clsvit` on PATH is
RESULTS_CALLBACK = "--trainer.callbacks+=clsvit_lightning.ops.ResultsFile"
CHECKPOINT_PLACEHOLDER = "{pretrain_checkpoint}"
BACKBONE_PREFIXES = ("model.backbone.", "model.init_args.backbone.")
SWEEP_RUN = "sweep-run"  # the project command a sweep's `command:` runs under `wandb agent`
PROBE_PREFIX = "probe."  # --probe.<key>=<value>: an argument of the probe stage, not of the pretraining
# The probe stage logs no W&B run of its own (under `wandb agent`, WANDB_RUN_ID would make it collide
# with the pretraining's run): the report stage writes its metrics into the pretraining's run.
PROBE_ENV = {"WANDB_MODE": "disabled"}


@dataclass
class SweepRun:
    index: int
    name: str
    params: dict[str, Any]
    run_dir: Path
    stages: dict[str, list[str]]  # stage name -> argv
    status: str = "pending"
    metrics: dict[str, float] = field(default_factory=dict)
    env: dict[str, dict[str, str]] = field(default_factory=dict)  # stage name -> environment overrides


@dataclass
class SweepRunArgs:
    """``clsvit sweep-run``'s arguments, split by stage."""

    fit_args: list[str]  # the pretraining's `clsvit fit` arguments (configs, overrides, the sweep's ${args})
    probe_configs: list[str] = field(default_factory=list)
    probe_args: list[str] = field(default_factory=list)  # --probe.<key>=<value> as --<key>=<value>
    run_dir: str | None = None
    dry_run: bool = False
    help: bool = False


def parse_sweep_run_args(argv: Sequence[str]) -> SweepRunArgs:
    """Split ``clsvit sweep-run`` arguments: its own options, the probe's, and the pretraining's (the rest).

    ``--probe_config A [B ...]`` (or ``=A``, repeatable): the probe's config files. ``--probe.<key>=<value>``
    (or ``--probe.<key> <value>``): ``--<key>=<value>`` for the probe only. ``--run_dir DIR``,
    ``--dry_run``, ``-h``/``--help``. Everything else is an argument of the pretraining's ``clsvit fit``.
    """
    parsed = SweepRunArgs(fit_args=[])
    argv = list(argv)
    i = 0

    def value_of(name: str, value: str | None) -> str:
        nonlocal i
        if value is not None:
            return value
        if i + 1 >= len(argv):
            raise ValueError(f"{name} needs a value")
        i += 1
        return argv[i]

    while i < len(argv):
        arg = argv[i]
        name, equals, inline = arg.partition("=")
        value = inline if equals else None
        if name == "--probe_config":
            if value is not None:
                parsed.probe_configs.append(value)
            else:
                start = i + 1
                while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                    i += 1
                if i + 1 == start:
                    raise ValueError("--probe_config needs at least one config file")
                parsed.probe_configs.extend(argv[start : i + 1])
        elif name.startswith(f"--{PROBE_PREFIX}") and len(name) > len(PROBE_PREFIX) + 2:
            parsed.probe_args.append(f"--{name[len(PROBE_PREFIX) + 2 :]}={value_of(name, value)}")
        elif name == "--run_dir":
            parsed.run_dir = value_of(name, value)
        elif arg == "--dry_run":
            parsed.dry_run = True
        elif arg in ("-h", "--help"):
            parsed.help = True
        else:
            parsed.fit_args.append(arg)
        i += 1
    return parsed


def backbone_args(argv: Sequence[str]) -> list[str]:
    """The ``--model.backbone.<key>`` arguments of ``argv`` (``=`` or separate value), as ``--key=value``."""
    found, argv = [], list(argv)
    for i, arg in enumerate(argv):
        name, equals, value = arg.partition("=")
        if not name.startswith("--") or not name[2:].startswith(BACKBONE_PREFIXES):
            continue
        if equals:
            found.append(arg)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            found.append(f"{name}={argv[i + 1]}")
    return found


def plan_stages(
    pretrain: Sequence[str],
    run_dir: Path,
    probe_configs: Sequence[str] = (),
    backbone: Sequence[str] = (),
    probe_args: Sequence[str] = (),
) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """The stages of one combination (argv each) and their environment overrides.

    ``pretrain`` is a complete command; it gets the run's root dir and the ``ResultsFile`` callback.
    With ``probe_configs``: ``probe`` (``clsvit fit`` of the probe on the pretraining's last checkpoint,
    with the ``backbone`` arguments so the architectures match, then ``probe_args``) and ``report``.
    """
    root = f"--trainer.default_root_dir={run_dir / 'pretrain'}"
    stages = {"pretrain": [*pretrain, root, RESULTS_CALLBACK]}
    env: dict[str, dict[str, str]] = {}
    if probe_configs:
        stages["probe"] = [
            *CLSVIT, "fit", *(a for c in probe_configs for a in ("--config", c)), *backbone,
            f"--model.init_args.pretrained={CHECKPOINT_PLACEHOLDER}", *probe_args,
            f"--trainer.default_root_dir={run_dir / 'probe'}", RESULTS_CALLBACK,
        ]  # fmt: skip
        stages["report"] = [sys.executable, "-m", "clsvit_lightning.ops.wandb_report", str(run_dir)]
        env["probe"] = dict(PROBE_ENV)
    return stages, env


def sweep_run_command(command: Sequence[str]) -> list[str] | None:
    """The arguments after ``sweep-run`` when ``command`` (rendered) runs ``clsvit sweep-run``, else None."""
    command = list(command)
    if command[: len(CLSVIT)] == CLSVIT and command[len(CLSVIT) : len(CLSVIT) + 1] == [SWEEP_RUN]:
        return command[len(CLSVIT) + 1 :]
    return None


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
    fixed = {name for name, spec in config["parameters"].items() if "value" in spec}  # same in every run
    for index, params in enumerate(expand(config, seed=seed, count=count)):
        name = combination_name(index, {k: v for k, v in params.items() if k not in fixed})
        run_dir = Path(out) / "runs" / name
        command = render_command(
            config.get("command", DEFAULT_COMMAND),
            params,
            program=config.get("program"),
            interpreter=[sys.executable],
            executables={"clsvit": CLSVIT},
            environ=os.environ,
        )
        inner = sweep_run_command(command)
        if inner is not None:  # `clsvit sweep-run ...`: its pretraining and probe, as the agent would run them
            try:
                parsed = parse_sweep_run_args(inner)
            except ValueError as error:
                raise SweepConfigError(f"the sweep's `clsvit sweep-run` command: {error}") from None
            pretrain = [*CLSVIT, "fit", *parsed.fit_args]
            configs = probe_configs or parsed.probe_configs  # --probe_config replaces the command's
            extra_probe = [*parsed.probe_args, *probe_args]
            backbone = backbone_args(parsed.fit_args)
        else:
            pretrain, configs, extra_probe = command, probe_configs or [], list(probe_args)
            backbone = [f"--{k}={v}" for k, v in params.items() if k.startswith(BACKBONE_PREFIXES)]
        if base_configs:
            pretrain = replace_configs(pretrain, base_configs)
        backbone = [*backbone, *backbone_args(pretrain_args)]  # an architecture change reaches the probe too
        stages, env = plan_stages([*pretrain, *pretrain_args], run_dir, configs, backbone, extra_probe)
        runs.append(SweepRun(index, name, dict(params), run_dir, stages, env=env))
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
        env = {**environ, **run.env.get(stage, {})}
        with log_path.open("w") as log:
            code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode
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
