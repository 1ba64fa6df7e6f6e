"""One run of the shipped W&B sweep as `wandb agent` runs it, without a W&B server (offline): its command
rendered and started by the agent's own code, pretraining -> probe -> report, and the W&B run's summary
holding the sweep's metric (val/mIoU), the online k-NN accuracy and the parameter overhead."""

import json
import os
import shutil
import struct
import sys
from pathlib import Path

import pytest
import yaml

from clsvit_lightning.cli import run
from clsvit_lightning.ops.sweep_config import expand, load_sweep, render_command
from clsvit_lightning.study.sweep import parse_sweep_run_args

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "experiments/sweeps/specialization.yaml"
PAPER = "norm1,norm2,ls1,ls2:all;final_norm;qkv:first_third"

# What a user sets in a copy of the sweep file for a smoke run on `clsvit synth` data: fixed parameters.
TINY = {
    "model.backbone.depth": 2,
    "data.batch_size": 8,
    "data.num_workers": 0,
    "trainer.max_epochs": 1,
    "trainer.limit_train_batches": 2,
    "trainer.enable_progress_bar": False,
    "probe.trainer.max_steps": 2,
    "probe.trainer.val_check_interval": 2,
    "probe.data.batch_size": 4,
    "probe.data.num_workers": 0,
    "probe.model.warmup_steps": 1,
    "probe.trainer.enable_progress_bar": False,
}
RECIPES = {  # the command's configs: the tiny recipe and the synthetic probe instead of ViT-S/ImageNet/ADE20K
    "configs/pretrain/vits16_vanilla.yaml": "configs/pretrain/tiny_synthetic.yaml",
    "configs/dense/ade20k_linear.yaml": "configs/dense/demo_synthetic_linear.yaml",
}


def wandb_records(path: Path):
    """The records of a ``run-<id>.wandb`` transaction log (leveldb-log framing of protobuf ``Record``s).

    Offline runs of wandb >= 0.19 write no ``files/wandb-summary.json``: the summary is in this log.
    """
    from wandb.proto import wandb_internal_pb2

    data, block, pos, pending = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += block - pos % block
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def offline_run(folder: Path) -> dict:
    """Run id, sweep id and final summary of one ``offline-run-*`` folder."""
    (log,) = folder.glob("run-*.wandb")
    found = {"ids": set(), "sweep_ids": set(), "summary": {}}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            found["ids"].add(record.run.run_id)
            found["sweep_ids"].add(record.run.sweep_id)
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                found["summary"][key] = json.loads(item.value_json)
    return found


def test_sweep_run_routes_arguments_to_their_stage():
    parsed = parse_sweep_run_args([
        "--config", "a.yaml", "--probe_config", "p.yaml", "q.yaml", "--model.backbone.depth=2",
        "--probe.data.root=/ade", "--probe.trainer.max_steps", "5", "--data.root=/in1k", "--run_dir=r", "--dry_run",
    ])  # fmt: skip
    assert parsed.fit_args == ["--config", "a.yaml", "--model.backbone.depth=2", "--data.root=/in1k"]
    assert parsed.probe_configs == ["p.yaml", "q.yaml"]
    assert parsed.probe_args == ["--data.root=/ade", "--trainer.max_steps=5"]
    assert parsed.run_dir == "r" and parsed.dry_run


@pytest.mark.parametrize(
    "macro",
    ["args", "args_no_hyphens", "args_no_equals", "args_no_boolean_flags", "args_json", "args_append_hydra",
     "args_override_hydra"],
)  # fmt: skip
def test_commands_render_as_the_agent_renders_them(monkeypatch, macro):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    monkeypatch.setenv("CLSVIT_DATA", "/datasets")
    monkeypatch.delenv("CLSVIT_UNSET", raising=False)
    params = {"model.backbone.specialization": "qkv:first_third", "n": 4, "on": True, "off": False, "l": [0, 1]}
    command = ["${env}", "clsvit", "sweep-run", "--data.root=${envvar:CLSVIT_DATA}/in1k", "${envvar:CLSVIT_UNSET}",
               f"${{{macro}}}"]  # fmt: skip
    values = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    values["env"] = ["/usr/bin/env"]
    agent = []  # wandb_agent.Agent._command_run's substitution
    for item in create_sweep_command(list(command)):
        agent += (values.get(item[2:-1]) or []) if item.startswith("${") and item.endswith("}") else [item]
    assert agent[0] == "/usr/bin/env"
    assert render_command(command, params, environ=os.environ) == agent[1:]


@pytest.fixture
def offline_agent_env(tmp_path, monkeypatch):
    """No W&B server or credentials; `clsvit` of this interpreter first on PATH; the agent's variables restored."""
    bin_dir = Path(sys.executable).parent
    if shutil.which("clsvit", path=str(bin_dir)) is None:
        pytest.skip(f"no clsvit script next to {sys.executable}")
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_BASE_URL", "WANDB_PROJECT",
                 "WANDB_ENTITY", "WANDB_RUN_GROUP", "SLURM_JOB_ID", "SLURM_NTASKS", "WANDB_RUN_ID",
                 "WANDB_SWEEP_PARAM_PATH"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / ".config" / "wandb"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SWEEP_ID", "offlinesweep")  # `wandb agent <id>` sets it before running commands
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.chdir(tmp_path)  # the agent runs the command in its own folder; the configs are shipped names
    yield tmp_path


def test_one_agent_run_of_the_shipped_sweep_reports_miou_knn_and_overhead_to_its_wandb_run(offline_agent_env):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args
    from wandb.wandb_agent import Agent

    tmp_path = offline_agent_env
    run(["synth", "--out", "data", "--kind", "all", "--num_train", "40", "--num_val", "20", "--num_classes", "10",
         "--size_range", "[40, 56]"])  # fmt: skip
    # The user's copy of the shipped sweep: data roots and tiny sizes as fixed parameters, tiny recipes.
    sweep = yaml.safe_load(SHIPPED.read_text())
    sweep["parameters"]["data.root"] = {"value": "data/imagenet"}
    sweep["parameters"]["probe.data.root"] = {"value": "data/ade20k"}
    sweep["parameters"].update({key: {"value": value} for key, value in TINY.items()})
    sweep["command"] = [RECIPES.get(item, item) for item in sweep["command"]]
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    config = load_sweep(tmp_path / "sweep.yaml")
    combinations = expand(config)
    assert len(combinations) == 20  # the fixed parameters add no combination
    (params,) = [p for p in combinations if p["model.backbone.specialization"] == PAPER and
                 p["model.backbone.num_registers"] == 4]  # fmt: skip

    # The agent's own code renders ${args} and starts the command (`/usr/bin/env clsvit sweep-run ...`).
    agent = Agent(api=None, queue=None, sweep_id="offlinesweep")
    agent._sweep_command = list(config["command"])
    agent._command_run({"run_id": "agentrun0", "program": None, "args": {k: {"value": v} for k, v in params.items()}})
    process = agent._run_processes["agentrun0"]
    try:
        code = process.wait(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    argv = list(process._popen.args)
    assert code == 0, argv
    # ...which is what the local runner renders (`${env}` aside: the agent writes /usr/bin/env there).
    assert argv[0] == "/usr/bin/env" and argv[1:3] == ["clsvit", "sweep-run"]
    assert argv[1:] == render_command(config["command"], params)
    assert f"--model.backbone.specialization={PAPER}" in argv and "--probe.trainer.max_steps=2" in argv
    assert (
        argv[-len(params) :]
        == create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})["args"]
    )

    run_dir = tmp_path / "outputs/sweep_runs/offlinesweep/agentrun0"  # sweep-run's folder under the agent
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "done"}
    # W&B (configs/logging/wandb.yaml: save_dir outputs/wandb): the pretraining's run, then the report
    # stage's resumption of it, both with the agent's run id; `wandb sync` uploads them as one run.
    folders = sorted((tmp_path / "outputs/wandb/wandb").glob("offline-run-*"))
    assert [f.name.rsplit("-", 1)[-1] for f in folders] == ["agentrun0", "agentrun0"]
    pretraining, report = (offline_run(f) for f in folders)
    assert pretraining["ids"] == report["ids"] == {"agentrun0"}
    assert "offlinesweep" in pretraining["sweep_ids"] | report["sweep_ids"]
    assert {"online_knn/k20_top1", "backbone/params_overhead_pct"} <= set(pretraining["summary"])
    summary = report["summary"]
    assert 0.0 <= summary["val/mIoU"] <= 1.0  # the sweep's metric, from the probe
    assert 0.0 <= summary["online_knn/k20_top1"] <= 100.0
    assert summary["online_knn/k20_top1"] == pretraining["summary"]["online_knn/k20_top1"]
    assert summary["backbone/params_overhead_pct"] > 0.0  # the paper preset adds [CLS]-side parameters
    assert summary["backbone/params_overhead_pct"] == pretraining["summary"]["backbone/params_overhead_pct"]
    probe = json.loads((run_dir / "probe/results.json").read_text())["metrics"]
    assert summary["val/mIoU"] == pytest.approx(probe["val/mIoU"])
