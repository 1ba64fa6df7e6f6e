"""A sweep file's combinations as runs of the study engine (``study/engine.py``), and their table.

Each combination is a run in ``<out>/runs/<NNN>-<params>/`` with the stages ``pretrain`` (the
sweep's own command) and, when probe configs are given, ``probe`` (a ``clsvit fit`` of the dense
probe on the pretraining's checkpoint, with the sweep's backbone arguments so the architectures
match) and ``report`` (``ops/wandb_report.py``: the probe's metrics written into the pretraining's
W&B run, when it logged to one). Stages run as subprocesses, with ``WANDB_MODE=offline`` in a local
sweep (unless the environment says otherwise): no W&B server is involved. A sweep whose command is
``clsvit sweep-run`` (what ``wandb agent`` runs: the same three stages for one combination,
``commands/sweep_run.py``) is planned from that command's own arguments: ``--config`` files and
overrides for the pretraining, ``--probe_config`` and ``--probe.<key>=<value>`` for the probe.
The engine skips finished combinations and stages, so an interrupted sweep continues, and stops
at a SLURM requeue. :func:`collect` writes ``results.csv`` and the Pareto plot from the runs' folders.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clsvit_lightning.ops.pareto import plot_pareto
from clsvit_lightning.ops.results import read_run_metrics
from clsvit_lightning.ops.sweep_config import (
    DEFAULT_COMMAND,
    SweepConfigError,
    combination_name,
    expand,
    render_command,
    replace_configs,
)
from clsvit_lightning.study.engine import CHECKPOINT_PLACEHOLDER, CLSVIT, Run, run_all, stage_command

BACKBONE_PREFIXES = ("model.backbone.", "model.init_args.backbone.")
SWEEP_RUN = "sweep-run"  # the project command a sweep's `command:` runs under `wandb agent`
PROBE_PREFIX = "probe."  # --probe.<key>=<value>: an argument of the probe stage, not of the pretraining
# The probe stage logs no W&B run of its own (under `wandb agent`, WANDB_RUN_ID would make it collide
# with the pretraining's run): the report stage writes its metrics into the pretraining's run.
PROBE_ENV = {"WANDB_MODE": "disabled"}


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
    stages = {"pretrain": stage_command(pretrain, run_dir, "pretrain")}
    env: dict[str, dict[str, str]] = {}
    if probe_configs:
        probe = [
            *CLSVIT, "fit", *(a for c in probe_configs for a in ("--config", c)), *backbone,
            f"--model.init_args.pretrained={CHECKPOINT_PLACEHOLDER}", *probe_args,
        ]  # fmt: skip
        stages["probe"] = stage_command(probe, run_dir, "probe")
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
) -> list[Run]:
    """One :class:`Run` per combination, with the exact argv of each stage.

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
        runs.append(Run(index, name, dict(params), run_dir, stages, env=env))
    return runs


def run_sweep(runs: list[Run], sweep_name: str, rerun: bool = False, log: Callable[[str], object] = print) -> None:
    """Every combination as subprocesses, offline and grouped by the sweep's name (a local sweep)."""
    environ = dict(os.environ)
    environ.setdefault("WANDB_MODE", "offline")  # a local sweep never talks to a W&B server
    environ.setdefault("WANDB_RUN_GROUP", sweep_name)  # offline runs are not attached to a sweep: group them
    run_all(runs, environ=environ, rerun=rerun, log=log)


def collect(
    runs: list[Run], out: str | Path, x_metric: str, y_metric: str, main_metrics: list[str]
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
