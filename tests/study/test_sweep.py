"""The local sweep runner (``clsvit sweep``, study/sweep.py) with a fake run command: the results table and
Pareto plot, resume of finished combinations, extra arguments per stage, the dry run, and the stages
planned for the shipped sweep's ``clsvit sweep-run`` command."""

import csv
import sys
from pathlib import Path

import pytest

from clsvit_lightning.cli import run
from clsvit_lightning.ops.sweep_config import load_sweep
from clsvit_lightning.study.engine import CLSVIT
from clsvit_lightning.study.sweep import plan_sweep

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "experiments/sweeps/specialization.yaml"


def write_sweep(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_local_runner_collects_metrics_into_a_csv_and_a_pareto_plot(tmp_path, capsys):
    fake = REPO / "tests/study/fake_run.py"
    sweep = write_sweep(
        tmp_path,
        f"method: grid\nparameters:\n  variant: {{values: [a, b, c, d, fail]}}\n"
        f"command:\n  - ${{env}}\n  - ${{interpreter}}\n  - {fake}\n  - ${{args}}\n",
    )
    out = tmp_path / "out"
    rows = run(["sweep", "--sweep", str(sweep), "--out", str(out)])
    with (out / "results.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["variant"] for r in table] == ["a", "b", "c", "d", "fail"]
    assert [r["status"] for r in table][:4] == ["done"] * 4 and table[4]["status"].startswith("failed")
    assert [float(r["val/mIoU"]) for r in table[:4]] == [30.0, 35.0, 32.0, 34.0]  # last logged value
    assert [float(r["online_knn/k20_top1"]) for r in table[:4]] == [50.0, 51.0, 52.0, 53.0]
    assert [r["pareto"] for r in table] == ["True", "True", "False", "False", "False"]
    assert list(table[0])[:7] == ["run", "status", "variant", "backbone/params_overhead_pct", "val/mIoU",
                                  "online_knn/k20_top1", "pareto"]  # fmt: skip
    assert (out / "pareto.png").stat().st_size > 0 and len(rows) == 5
    capsys.readouterr()
    run(["sweep", "--sweep", str(sweep), "--out", str(out)])  # an interrupted sweep continues
    assert capsys.readouterr().out.count("done before, skipped") == 4


def test_extra_arguments_reach_their_stage(tmp_path, capsys):
    out = tmp_path / "out"
    probe = str(REPO / "configs/dense/demo_synthetic_linear.yaml")
    run([
        "sweep", "--sweep", str(SHIPPED), "--out", str(out), "--count", "1", "--dry_run",
        "--pretrain_args=--data.init_args.root=/datasets/imagenet --trainer.max_epochs=2",
        "--probe_config", probe, "--probe_args=--data.init_args.root='/datasets/ade 20k'",
    ])  # fmt: skip
    pretrain, probe_line = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")][:2]
    assert "--data.init_args.root=/datasets/imagenet --trainer.max_epochs=2" in pretrain and "ade" not in pretrain
    assert "'--data.init_args.root=/datasets/ade 20k'" in probe_line and "imagenet" not in probe_line


def test_dry_run_prints_the_commands_and_runs_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    base = str(REPO / "tests/ops/tiny_pretrain.yaml")
    rows = run(["sweep", "--sweep", str(SHIPPED), "--out", str(out), "--base_config", base, "--dry_run"])
    printed = capsys.readouterr().out
    assert len(rows) == 20 and not out.exists()
    assert printed.count(f"--config {base}") == 20 and "configs/pretrain/dinov2.yaml" not in printed
    assert f"{sys.executable} -m clsvit_lightning.cli fit" in printed


def test_an_unclosed_quote_in_extra_arguments_is_a_parser_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(
            [
                "sweep",
                "--sweep",
                str(SHIPPED),
                "--out",
                str(tmp_path),
                "--dry_run",
                "--pretrain_args=--data.init_args.root='/x",
            ]
        )
    assert "--pretrain_args: No closing quotation" in capsys.readouterr().err


def test_the_local_runner_plans_the_sweep_run_stages_of_the_shipped_sweep(tmp_path):
    runs = plan_sweep(load_sweep(SHIPPED), tmp_path, count=2)
    names = ["000-specialization-vanilla-num_registers-0", "001-specialization-vanilla-num_registers-4"]
    assert [r.name for r in runs] == names  # the fixed data roots do not name the runs
    stages = runs[1].stages
    assert list(stages) == ["pretrain", "probe", "report"] and runs[1].env["probe"] == {"WANDB_MODE": "disabled"}
    assert stages["pretrain"][: len(CLSVIT) + 1] == [*CLSVIT, "fit"]
    assert "--data.root=/datasets/imagenet" in stages["pretrain"] and "--probe_config" not in stages["pretrain"]
    assert not any("ade20k" in a for a in stages["pretrain"])
    assert "configs/dense/ade20k_linear.yaml" in stages["probe"] and "--data.root=/datasets/ade20k" in stages["probe"]
    assert "--model.backbone.num_registers=4" in stages["probe"]
    assert stages["report"][-1] == str(runs[1].run_dir)
