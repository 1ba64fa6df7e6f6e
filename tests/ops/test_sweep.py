"""The shipped sweep parses through the real CLI for every combination; expansion, rendering, the
local runner (with a fake run command) and the Pareto front."""

import csv
import sys
from pathlib import Path

import pytest
import torch
import yaml

from clsvit_lightning.cli import run
from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.ops.pareto import pareto_front
from clsvit_lightning.ops.sweep_config import SweepConfigError, expand, load_sweep, render_command, replace_configs
from clsvit_lightning.ops.sweep_runner import backbone_args, parse_sweep_run_args

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "experiments/sweeps/specialization.yaml"


def printed_config(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        run([*argv, "--print_config"])
    assert exit_info.value.code == 0, argv
    return yaml.safe_load(capsys.readouterr().out)


def test_every_combination_of_the_shipped_sweep_is_a_valid_config(capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # the command names configs relative to the repository
    config = load_sweep(SHIPPED)
    combinations = expand(config)
    assert len(combinations) == 20  # qkv 5 x norms 2 x registers 2 (the data roots are fixed values)
    for index, params in enumerate(combinations):
        argv = render_command(config["command"], params, executables={"clsvit": []})
        assert argv[0] == "sweep-run"
        parsed = parse_sweep_run_args(argv[1:])
        pretrain = printed_config(capsys, ["fit", *parsed.fit_args])
        backbone = pretrain["model"]["init_args"]["backbone"]["init_args"]
        assert backbone["specialization"] == params["model.backbone.specialization"]
        assert backbone["num_registers"] == params["model.backbone.num_registers"]
        assert pretrain["data"]["init_args"]["root"] == params["data.root"]
        assert pretrain["trainer"]["logger"]["class_path"] == "clsvit_lightning.ops.ClsvitWandbLogger"
        knn = [c for c in pretrain["trainer"]["callbacks"] if c["class_path"].endswith("OnlineKNN")]
        assert len(knn) == 1 and knn[0]["init_args"]["root"] is None  # follows data.root
        with torch.device("meta"):  # the spec strings must also build the ViT-S of the recipe
            VisionTransformer(**backbone)
        if index % 5:
            continue  # the probe's parse is the same for every spec string: check a few
        probe_argv = [*(a for c in parsed.probe_configs for a in ("--config", c)), *backbone_args(parsed.fit_args)]
        probe = printed_config(capsys, ["fit", *probe_argv, *parsed.probe_args])
        probe_backbone = probe["model"]["init_args"]["backbone"]["init_args"]
        keys = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "num_registers", "specialization")
        assert {k: probe_backbone[k] for k in keys} == {k: backbone[k] for k in keys}  # loads the checkpoint
        assert probe["data"]["init_args"]["root"] == params["probe.data.root"]


def test_the_shipped_sweep_covers_the_axes_of_the_issue():
    values = load_sweep(SHIPPED)["parameters"]["model.backbone.specialization"]["values"]
    qkv = {v.split("qkv:")[1] if "qkv:" in v else "none" for v in values}
    assert qkv == {"none", "first_quarter", "first_third", "first_half", "all"}
    assert sum("final_norm" in v for v in values) == 5  # norms on for half of them
    assert "norm1,norm2,ls1,ls2:all;final_norm;qkv:first_third" in values  # = the paper preset


def write_sweep(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_grid_and_seeded_random_expansion(tmp_path):
    parameters = {"a": {"values": [1, 2]}, "b": {"value": "x"}, "c": {"values": [True, False]}}
    grid = {"method": "grid", "parameters": parameters}
    assert expand(grid) == [
        {"a": 1, "b": "x", "c": True}, {"a": 1, "b": "x", "c": False},
        {"a": 2, "b": "x", "c": True}, {"a": 2, "b": "x", "c": False},
    ]  # fmt: skip
    assert len(expand(grid, count=3)) == 3
    parameters = {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}, "k": {"values": [1, 2, 3]}}
    random_search = {"method": "random", "parameters": parameters}
    first, again, other = (expand(random_search, seed=s, count=5) for s in (0, 0, 1))
    assert first == again and first != other
    assert all(1e-4 <= p["lr"] <= 1e-2 and p["k"] in (1, 2, 3) for p in first)
    with pytest.raises(SweepConfigError, match="--count"):
        expand(random_search)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method: bayes\nparameters: {a: {values: [1]}}\n", "method 'bayes'"),
        ("method: grid\nparameters: {a: {values: [1, null]}}\n", "'null'"),
        ("method: grid\nparameters: {a: {distribution: uniform, min: 0, max: 1}}\n", "continuous"),
        ("method: grid\nparameters: {a: {values: [1]}}\ncommand: [${env}, clsvit]\n", "block list"),
        ("method: grid\nparameters: {a: {parameters: {b: {values: [1]}}}}\n", "flat dotted"),
    ],
)
def test_sweep_files_the_runner_cannot_use_are_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(SweepConfigError, match=message):
        load_sweep(write_sweep(tmp_path, text))


def test_commands_render_like_the_wandb_agent():
    command = ["${env}", "clsvit", "fit", "--config", "a.yaml", "${args}"]
    params = {"model.flag": True, "model.blocks": [0, 1], "model.lr": 0.001}
    argv = render_command(command, params, executables={"clsvit": ["py", "-m", "cli"]})
    assert argv == ["py", "-m", "cli", "fit", "--config", "a.yaml", "--model.flag=True", "--model.blocks=[0, 1]",
                    "--model.lr=0.001"]  # fmt: skip
    assert replace_configs(argv, ["b.yaml", "c.yaml"])[3:8] == ["fit", "--config", "b.yaml", "--config", "c.yaml"]


def test_pareto_front_of_a_hand_made_case():
    points = [(0.0, 30.0), (5.0, 35.0), (5.0, 32.0), (10.0, 34.0), (2.0, 30.0), (8.0, 36.0), (8.0, 36.0)]
    # (5, 32) and (10, 34) lose to (5, 35); (2, 30) loses to (0, 30); the two (8, 36) tie and both stay.
    assert pareto_front(points) == [0, 1, 5, 6]
    assert pareto_front([]) == []


def test_local_runner_collects_metrics_into_a_csv_and_a_pareto_plot(tmp_path, capsys):
    fake = REPO / "tests/ops/fake_run.py"
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


def test_a_stage_stopped_for_a_requeue_is_not_done_and_resumes_on_the_next_sweep(tmp_path):
    from clsvit_lightning.ops.sweep_runner import SweepRun, run_sweep

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
    other = SweepRun(1, "001-b", {}, tmp_path / "runs" / "001-b", {"probe": stages["probe"]})
    sweep_run = SweepRun(0, "000-a", {}, run_dir, stages)
    run_sweep([sweep_run, other], "test", log=lambda message: None)
    assert sweep_run.status.startswith("requeued: pretrain")
    assert not (run_dir / "probe_ran").exists()  # the probe must not read a half-trained checkpoint
    assert '"requeued' in (run_dir / "status.json").read_text()
    assert other.status == "pending"  # the job is being requeued: the sweep stops there

    sweep_run = SweepRun(0, "000-a", {}, run_dir, stages)
    run_sweep([sweep_run], "test", log=lambda message: None)  # the requeued job runs the sweep again
    assert sweep_run.status == "done" and (run_dir / "probe_ran").exists()


def test_finished_stages_are_not_rerun_and_a_stale_requeue_marker_is_ignored(tmp_path):
    from clsvit_lightning.ops.sweep_runner import SweepRun, run_one

    run_dir = tmp_path / "run"
    count = (
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); p.write_text(p.read_text() + 'x' if p.exists() else 'x')"
    )
    stages = {
        "pretrain": [sys.executable, "-c", count, str(tmp_path / "pretrain_runs")],
        "probe": [sys.executable, "-c", "import sys; sys.exit(3)"],
    }
    sweep_run = SweepRun(0, "run", {}, run_dir, stages)
    (run_dir / "pretrain").mkdir(parents=True)
    (run_dir / "pretrain" / "REQUEUED").write_text("stale")  # from a requeue resumed off SLURM
    run_one(sweep_run, {})
    assert sweep_run.status.startswith("failed: probe")  # the stale marker did not stop pretrain
    run_one(sweep_run, {})  # retried: pretraining finished before and is not run again
    assert (tmp_path / "pretrain_runs").read_text() == "x"
    run_one(sweep_run, {}, rerun=True)
    assert (tmp_path / "pretrain_runs").read_text() == "xx"


def test_the_probe_finds_the_checkpoint_wherever_the_logger_put_it(tmp_path):
    # A W&B logger puts checkpoints under its save_dir, not the run's folder: ResultsFile records the path.
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel

    from clsvit_lightning.ops import ResultsFile
    from clsvit_lightning.ops.sweep_runner import latest_checkpoint

    run_dir, elsewhere = tmp_path / "runs/000/pretrain", tmp_path / "wandb/clsvit/abc123/checkpoints"
    trainer = Trainer(
        default_root_dir=run_dir, max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=elsewhere, save_last=True), ResultsFile()],
    )  # fmt: skip
    trainer.fit(BoringModel())
    assert not list(run_dir.rglob("*.ckpt"))
    assert latest_checkpoint(run_dir) == (elsewhere / "last.ckpt").resolve()


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
    from clsvit_lightning.ops.sweep_runner import CLSVIT, plan_sweep

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
