"""The shipped sweep parses through the real CLI for every combination; sweep files: validation,
expansion, rendering as the W&B agent does; the Pareto front. (The local runner: tests/study/test_sweep.py.)"""

from pathlib import Path

import pytest
import torch
import yaml

from clsvit_lightning.cli import run
from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.ops.pareto import pareto_front
from clsvit_lightning.ops.sweep_config import SweepConfigError, expand, load_sweep, render_command, replace_configs
from clsvit_lightning.study.sweep import backbone_args, parse_sweep_run_args

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
