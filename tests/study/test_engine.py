"""The study engine (study/engine.py): stages in order, finished stages and runs skipped, a SLURM requeue
left unfinished and resumed, the pretraining's checkpoint found for the next stage, and the same
record whether a ``clsvit`` stage runs in this process or as a subprocess."""

import json
import os
import sys
from pathlib import Path

import pytest
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from clsvit_lightning.callbacks import ResultsFile
from clsvit_lightning.study.engine import (
    CHECKPOINT_PLACEHOLDER,
    CLSVIT,
    Run,
    run_all,
    run_stages,
    stage_checkpoint,
    stage_command,
)

BORING = [
    "--model=lightning.pytorch.demos.boring_classes.BoringModel",
    "--data=lightning.pytorch.demos.boring_classes.BoringDataModule",
    "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.logger=false",
    "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
]  # fmt: skip


class RecordEnvironment(Callback):
    """Writes ``CLSVIT_TEST_STAGE`` as the stage saw it into its folder."""

    def on_fit_start(self, trainer, pl_module):
        Path(trainer.default_root_dir, "env.txt").write_text(os.environ.get("CLSVIT_TEST_STAGE", "unset"))


def test_a_stage_stopped_for_a_requeue_is_not_done_and_resumes_on_the_next_launch(tmp_path):
    run_dir = tmp_path / "runs" / "000-a"
    # The pretraining stage exits 0 after writing REQUEUED the first time, and finishes the second time.
    pretrain = (
        "import pathlib, sys; stage = pathlib.Path(sys.argv[1]); stage.mkdir(parents=True, exist_ok=True); "
        "marker = stage / 'REQUEUED'; first = not (stage / 'started').exists(); (stage / 'started').touch(); "
        "marker.write_text('hpc_ckpt_1.ckpt') if first else marker.unlink(missing_ok=True)"
    )
    probe = "import pathlib, sys; pathlib.Path(sys.argv[1]).touch()"
    stages = {
        "pretrain": [sys.executable, "-c", pretrain, str(run_dir / "pretrain")],
        "probe": [sys.executable, "-c", probe, str(run_dir / "probe_ran")],
    }
    other = Run(1, "001-b", {}, tmp_path / "runs" / "001-b", {"probe": stages["probe"]})
    run = Run(0, "000-a", {}, run_dir, stages)
    run_all([run, other], log=lambda message: None)
    assert run.status.startswith("requeued: pretrain")
    assert not (run_dir / "probe_ran").exists()  # the probe must not read a half-trained checkpoint
    assert '"requeued' in (run_dir / "status.json").read_text()
    assert other.status == "pending"  # the job is being requeued: the runs stop there

    run = Run(0, "000-a", {}, run_dir, stages)
    run_all([run], log=lambda message: None)  # the requeued job runs them again
    assert run.status == "done" and (run_dir / "probe_ran").exists()


def test_finished_stages_are_not_rerun_and_a_stale_requeue_marker_is_ignored(tmp_path):
    run_dir = tmp_path / "run"
    count = (
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); p.write_text(p.read_text() + 'x' if p.exists() else 'x')"
    )
    stages = {
        "pretrain": [sys.executable, "-c", count, str(tmp_path / "pretrain_runs")],
        "probe": [sys.executable, "-c", "import sys; sys.exit(3)"],
    }
    run = Run(0, "run", {}, run_dir, stages)
    (run_dir / "pretrain").mkdir(parents=True)
    (run_dir / "pretrain" / "REQUEUED").write_text("stale")  # from a requeue resumed off SLURM
    run_stages(run, environ={})
    assert run.status.startswith("failed: probe")  # the stale marker did not stop pretrain
    run_stages(run, environ={})  # retried: pretraining finished before and is not run again
    assert (tmp_path / "pretrain_runs").read_text() == "x"
    run_stages(run, environ={}, rerun=True)
    assert (tmp_path / "pretrain_runs").read_text() == "xx"


def test_the_probe_finds_the_checkpoint_wherever_the_logger_put_it(tmp_path):
    # A W&B logger puts checkpoints under its save_dir, not the run's folder: ResultsFile records the path.
    run_dir, elsewhere = tmp_path / "runs/000/pretrain", tmp_path / "wandb/clsvit/abc123/checkpoints"
    trainer = Trainer(
        default_root_dir=run_dir, max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=elsewhere, save_last=True), ResultsFile()],
    )  # fmt: skip
    trainer.fit(BoringModel())
    assert not list(run_dir.rglob("*.ckpt"))
    assert stage_checkpoint(run_dir) == (elsewhere / "last.ckpt").resolve()


def test_a_clsvit_stage_runs_in_this_process_and_leaves_the_same_record(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CLSVIT_TEST_STAGE", raising=False)
    run_dir = tmp_path / "run"
    record_env = "--trainer.callbacks+=tests.study.test_engine.RecordEnvironment"
    copy = "import pathlib, sys; pathlib.Path(sys.argv[2]).write_text(sys.argv[1])"
    stages = {
        "pretrain": stage_command([*CLSVIT, "fit", *BORING, record_env], run_dir, "pretrain"),
        "probe": [sys.executable, "-c", copy, CHECKPOINT_PLACEHOLDER, str(run_dir / "probe_checkpoint.txt")],
    }
    run = Run(0, "run", {"seed": 0}, run_dir, stages, env={"pretrain": {"CLSVIT_TEST_STAGE": "pretrain"}})
    run_stages(run, in_process=True)
    assert run.status == "done" and json.loads((run_dir / "status.json").read_text()) == {"status": "done"}
    assert (run_dir / "pretrain" / "env.txt").read_text() == "pretrain"  # the stage's environment...
    assert "CLSVIT_TEST_STAGE" not in os.environ  # ...for the stage only
    assert not (run_dir / "pretrain.log").exists()  # in this process: the output went to the console
    assert (run_dir / "pretrain.cmd").read_text().startswith(f"{sys.executable} -m clsvit_lightning.cli fit ")
    results = json.loads((run_dir / "pretrain" / "results.json").read_text())
    checkpoint = stage_checkpoint(run_dir / "pretrain")
    assert results["stage"] == "fit" and results["global_step"] == 2 and results["checkpoint"] == str(checkpoint)
    assert (run_dir / "probe_checkpoint.txt").read_text() == str(checkpoint)  # another command: a subprocess
    assert {p.name for p in run_dir.glob("*.done")} == {"pretrain.done", "probe.done"}
    assert json.loads((run_dir / "params.json").read_text()) == {"seed": 0}


def test_an_in_process_failure_is_recorded_then_raised(tmp_path, capsys):
    run_dir = tmp_path / "run"
    stages = {"pretrain": stage_command([*CLSVIT, "fit", *BORING, "--trainer.max_stepz=2"], run_dir, "pretrain")}
    run = Run(0, "run", {}, run_dir, stages)
    with pytest.raises(SystemExit):
        run_stages(run, in_process=True)
    assert run.status.startswith("failed: pretrain raised SystemExit")
    assert '"failed: pretrain' in (run_dir / "status.json").read_text() and not (run_dir / "pretrain.done").exists()
