"""Runs made of stages (pretrain, then probe, then report), one folder each, cached and resumable.

The demo and the CPU proxy (``study/pipeline.py``), the local sweep and ``clsvit sweep-run``
(``study/sweep.py``) all run through this engine. A :class:`Run` is a folder and an ordered list of
stages, each a command line. :func:`stage_command` gives a ``clsvit`` stage its own folder as the
trainer's ``default_root_dir`` and the ``ResultsFile`` callback, so every stage leaves the same
record, whoever planned it and however it ran::

    RUN_DIR/params.json     the run's parameters
    RUN_DIR/<stage>/        the stage's default_root_dir: checkpoints, results.json (metrics, checkpoint, W&B run)
    RUN_DIR/<stage>.cmd     its command line, to run it again by hand
    RUN_DIR/<stage>.log     its output, when it ran as a subprocess
    RUN_DIR/<stage>.done    it finished: not run again (unless ``rerun``)
    RUN_DIR/status.json     {"status": "done" | "failed: ..." | "requeued: ..."}

``in_process`` says how a ``clsvit fit|validate|test|predict`` stage runs: in this process through
:func:`clsvit_lightning.lightning_cli.run` (the demo: progress on the console, an error raised once
it is recorded), or as a subprocess (the sweep: output in ``<stage>.log``, a failure recorded in the
status and the run stopped there). Other commands (the W&B report, a sweep's own program) always run
as subprocesses.

``{pretrain_checkpoint}`` in a stage's arguments stands for the pretraining's checkpoint
(:func:`stage_checkpoint`). A stage that stopped for a SLURM requeue (``REQUEUED`` in its folder,
``callbacks/slurm_requeue.py``) exits 0 without having finished: the run is left ``requeued``, its
later stages do not run, :func:`run_all` stops, and the restarted job resumes the run from the saved
checkpoint.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clsvit_lightning.callbacks.slurm_requeue import REQUEUE_MARKER
from clsvit_lightning.models.checkpoint_files import newest_checkpoint
from clsvit_lightning.ops.results import read_results

CLSVIT = [sys.executable, "-m", "clsvit_lightning.cli"]  # this interpreter, whatever `clsvit` on PATH is
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")  # what can run in this process
RESULTS_CALLBACK = "--trainer.callbacks+=clsvit_lightning.callbacks.ResultsFile"
CHECKPOINT_PLACEHOLDER = "{pretrain_checkpoint}"
STATUS_NAME = "status.json"


@dataclass
class Run:
    index: int
    name: str
    params: dict[str, Any]
    run_dir: Path
    stages: dict[str, list[str]]  # stage name -> argv, in order
    status: str = "pending"
    metrics: dict[str, float] = field(default_factory=dict)
    env: dict[str, dict[str, str]] = field(default_factory=dict)  # stage name -> environment overrides


def stage_command(command: Sequence[str], run_dir: Path, stage: str) -> list[str]:
    """``command`` writing into ``run_dir/stage`` with the ``ResultsFile`` callback (the stage's record)."""
    return [*command, f"--trainer.default_root_dir={run_dir / stage}", RESULTS_CALLBACK]


def stage_checkpoint(folder: Path) -> Path:
    """The checkpoint a stage left in ``folder``, the one later stages start from.

    The one ``ResultsFile`` recorded (the run's ``ModelCheckpoint``, wherever its logger put it,
    e.g. under a W&B ``save_dir``); else the newest ``last*.ckpt`` under ``folder``, else its newest ``.ckpt``.
    """
    recorded = read_results(folder).get("checkpoint")
    if recorded and Path(recorded).is_file():
        return Path(recorded)
    try:
        return newest_checkpoint(folder)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no checkpoint under {folder}; does the pretraining config save one (ModelCheckpoint)?"
        ) from None


def stage_metrics(run_dir: Path, stage: str) -> dict[str, float]:
    """The final metrics one stage recorded (its ``results.json``)."""
    return dict(read_results(run_dir / stage).get("metrics", {}))


def finished(run_dir: Path) -> bool:
    """True when every stage of the run in ``run_dir`` has finished (``status.json`` says done)."""
    path = run_dir / STATUS_NAME
    return path.is_file() and json.loads(path.read_text()).get("status") == "done"


def run_stages(
    run: Run, *, in_process: bool = False, environ: Mapping[str, str] | None = None, rerun: bool = False
) -> None:
    """Run the stages of one run in order; stop at the first failure (recorded in ``run.status``).

    A stage that finished before (``<stage>.done``) is not run again unless ``rerun``. ``environ``:
    the environment of the stages (``os.environ`` when None), before each stage's own overrides.
    In this process, a failure is raised once it is recorded.
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
        if any(CHECKPOINT_PLACEHOLDER in a for a in argv):
            try:
                checkpoint = str(stage_checkpoint(run.run_dir / "pretrain"))
            except FileNotFoundError as error:
                run.status = f"failed: {error}"
                break
            argv = [a.replace(CHECKPOINT_PLACEHOLDER, checkpoint) for a in argv]
        (run.run_dir / f"{stage}.cmd").write_text(shlex.join(argv) + "\n")
        env = {**(os.environ if environ is None else environ), **run.env.get(stage, {})}
        if in_process and _lightning_args(argv) is not None:
            try:
                with _environment({k: v for k, v in env.items() if os.environ.get(k) != v}):
                    _run_lightning(_lightning_args(argv))
            except (Exception, SystemExit) as error:
                run.status = f"failed: {stage} raised {type(error).__name__}: {error}"
                _write_status(run)
                raise
        else:
            log_path = run.run_dir / f"{stage}.log"
            with log_path.open("w") as log:
                code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode
            if code:
                run.status = f"failed: {stage} exited with {code} (see {log_path})"
                break
        if marker.is_file():
            run.status = f"requeued: {stage} stopped for a SLURM requeue; the next launch resumes it"
            break
        done_file.touch()
    else:
        run.status = "done"
    _write_status(run)


def run_all(
    runs: Sequence[Run],
    *,
    in_process: bool = False,
    environ: Mapping[str, str] | None = None,
    rerun: bool = False,
    log: Callable[[str], object] = print,
) -> None:
    """Every run in order: finished runs are skipped (unless ``rerun``), a SLURM requeue stops the rest."""
    for run in runs:
        where = f"[{run.index + 1}/{len(runs)}] {run.name}"
        if not rerun and finished(run.run_dir):
            run.status = "done"
            log(f"{where}: done before, skipped")
            continue
        log(f"{where}: running {', '.join(run.stages)}")
        run_stages(run, in_process=in_process, environ=environ, rerun=rerun)
        log(f"{where}: {run.status}")
        if run.status.startswith("requeued"):
            log("stopping: the SLURM job is being requeued; the restarted job continues these runs")
            break


def _lightning_args(argv: Sequence[str]) -> list[str] | None:
    """The arguments after ``clsvit`` when ``argv`` is a ``clsvit fit|validate|test|predict``, else None."""
    head, rest = list(argv[: len(CLSVIT)]), list(argv[len(CLSVIT) :])
    return rest if head == CLSVIT and rest[:1] and rest[0] in LIGHTNING_COMMANDS else None


def _run_lightning(args: list[str]) -> None:
    from clsvit_lightning.lightning_cli import run  # noqa: PLC0415 (the subprocess path needs no Lightning)

    run(args)


@contextmanager
def _environment(changes: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``changes`` for the duration (an in-process stage's environment)."""
    before = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _write_status(run: Run) -> None:
    (run.run_dir / STATUS_NAME).write_text(json.dumps({"status": run.status}))
