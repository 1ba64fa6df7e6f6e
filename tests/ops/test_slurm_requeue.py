"""SLURM preemption under a simulated SLURM job: signal mid-step -> checkpoint after the step ->
`scontrol requeue` -> the restarted job resumes at that step with the same schedules, and ends
with the weights of the run that was never preempted."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clsvit_lightning.callbacks.slurm_requeue import StepBoundaryRequeue, hpc_checkpoints

REPO = Path(__file__).resolve().parents[2]
JOB_ID = "4242"


def slurm_env(tmp_path: Path) -> dict[str, str]:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    scontrol = fake_bin / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol_calls.txt"}\n')
    scontrol.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        SLURM_NTASKS="1", SLURM_NTASKS_PER_NODE="1", SLURM_NNODES="1", SLURM_PROCID="0", SLURM_LOCALID="0",
        SLURM_NODEID="0", SLURM_JOB_ID=JOB_ID, SLURM_JOB_NAME="train", SLURM_NODELIST="localhost",
        PATH=f"{fake_bin}{os.pathsep}{env['PATH']}", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1",
    )  # fmt: skip
    return env


def launch(root: Path, env: dict[str, str], overlay: str = "tests/ops/slurm_run.yaml") -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "clsvit_lightning.cli", "fit",
        "--config", "tests/ops/tiny_pretrain.yaml", "--config", "experiments/slurm/requeue.yaml",
        "--config", overlay, f"--trainer.default_root_dir={root}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def events(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "steps.jsonl").read_text().splitlines()]


def test_requeue_saves_at_a_step_boundary_and_the_restart_resumes_there(tmp_path):
    root, env = tmp_path / "run", slurm_env(tmp_path)
    launch(root, env)

    # The signal arrived between backward and optimizer step of step 2: the checkpoint holds the
    # state after that step (global step 3), the weights the run stopped with, and nothing else ran.
    assert (tmp_path / "scontrol_calls.txt").read_text().split() == ["requeue", JOB_ID]
    (checkpoint_path,) = hpc_checkpoints(root)
    assert checkpoint_path.name == "hpc_ckpt_1.ckpt"
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    final = torch.load(root / "final_0.pt", weights_only=True)
    for name, value in final.items():
        assert torch.equal(checkpoint["state_dict"][name], value), name
    first = events(root)
    assert first[-1] == {"event": "end", "global_step": 3}
    assert (root / "REQUEUED").read_text() == "hpc_ckpt_1.ckpt at global step 3\n"  # exited 0, not finished

    launch(root, env)  # the requeued job: same command, same folder, ckpt_path unset
    second = events(root)[len(first) :]
    start = second[0]
    assert start["event"] == "start" and start["global_step"] == 3
    assert start["schedules"] == first[0]["schedules"]  # the same total length and recipe
    steps = [e for e in second if e["event"] == "step"]
    assert [e["global_step"] for e in steps] == [3, 4, 5, 6, 7]  # max_epochs 2 x 4 steps, none repeated
    for event in steps:
        for name, schedule in first[0]["schedules"].items():
            assert event[name] == pytest.approx(schedule[event["global_step"]], rel=1e-6), name
    assert second[-1] == {"event": "end", "global_step": 8}
    assert (root / "config.yaml").is_file()  # rewritten by the restart instead of stopping it
    assert len(hpc_checkpoints(root)) == 1
    assert not (root / "REQUEUED").exists()  # the restart ran to the end

    # Bit for bit the run that was never preempted (the requeue resumed mid-epoch: step 3 of 4).
    reference = tmp_path / "uninterrupted"
    launch(reference, slurm_env(tmp_path), overlay="tests/ops/slurm_run_uninterrupted.yaml")
    expected, resumed = (
        torch.load(reference / "final_0.pt", weights_only=True),
        torch.load(root / "final_1.pt", weights_only=True),
    )
    assert expected.keys() == resumed.keys()
    for name, value in expected.items():
        assert torch.equal(resumed[name], value), name


def test_bad_arguments_name_the_option():
    with pytest.raises(ValueError, match="requeue_signal"):
        StepBoundaryRequeue(requeue_signal="SIGNOPE")
    with pytest.raises(ValueError, match="keep_checkpoints"):
        StepBoundaryRequeue(keep_checkpoints=0)


def test_old_hpc_checkpoints_are_listed_in_number_order(tmp_path):
    for number in (10, 2, 1):
        (tmp_path / f"hpc_ckpt_{number}.ckpt").touch()
    (tmp_path / "hpc_ckpt_x.ckpt").touch()
    assert [p.name for p in hpc_checkpoints(tmp_path)] == ["hpc_ckpt_1.ckpt", "hpc_ckpt_2.ckpt", "hpc_ckpt_10.ckpt"]
