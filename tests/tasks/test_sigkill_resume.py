"""A real ``kill -9`` of ``clsvit fit`` at an arbitrary moment, then ``--ckpt_path last``: the run ends
bit-identical to the one never killed (no step lost beyond the last checkpoint, none replayed)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def command(root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "clsvit_lightning.cli", "fit", "--config", "tests/ops/tiny_pretrain.yaml",
        f"--trainer.default_root_dir={root}", "--trainer.max_epochs=5",
        "--trainer.callbacks+=clsvit_lightning.callbacks.RunCheckpoint", f"--trainer.callbacks.dirpath={root / 'ckpt'}",
        "--trainer.callbacks.save_last=true", "--trainer.callbacks.save_top_k=0",
        "--trainer.callbacks.every_n_train_steps=1", *extra,
    ]  # fmt: skip


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def saved_step(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True, map_location="cpu")["global_step"])
    except Exception:  # noqa: BLE001 (absent, or being written)
        return -1


def test_sigkill_then_ckpt_path_last_ends_bit_identical(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(command(reference), cwd=REPO, env=environment(), check=True, capture_output=True, timeout=600)

    process = subprocess.Popen(command(killed), cwd=REPO, env=environment(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while saved_step(killed / "ckpt" / "last.ckpt") < 6 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)  # wherever it is: mid-step, mid-save, between steps
    process.wait()
    at_kill = saved_step(killed / "ckpt" / "last.ckpt")
    assert 6 <= at_kill < 20  # 5 epochs x 4 steps

    done = subprocess.run(command(killed, "--ckpt_path", "last"), cwd=REPO, env=environment(), capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    expected = torch.load(reference / "ckpt" / "last.ckpt", weights_only=True)
    resumed = torch.load(killed / "ckpt" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == expected["global_step"] == 20
    for name, value in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name
    for a, b in zip(expected["optimizer_states"][0]["state"].values(), resumed["optimizer_states"][0]["state"].values(),
                    strict=True):  # fmt: skip
        for key, value in a.items():
            assert torch.equal(value, b[key]) if torch.is_tensor(value) else value == b[key], key
