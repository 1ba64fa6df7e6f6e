"""The package stands alone: a wheel built from the checkout carries the configs, the licence and
the type marker, reports one version, and ``clsvit demo`` runs from an unrelated folder with it."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import clsvit_lightning

ROOT = Path(__file__).parents[2]
TRACKED_CONFIGS = sorted(p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (built,) = out.glob("clsvit_lightning-*.whl")
    return built


def test_the_wheel_holds_every_config_the_licence_and_py_typed(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(
        n.removeprefix("clsvit_lightning/configs/") for n in names if n.startswith("clsvit_lightning/configs/")
    )
    assert shipped == TRACKED_CONFIGS and len(shipped) > 20
    assert "clsvit_lightning/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert f"Version: {clsvit_lightning.__version__}" in metadata  # one source: clsvit_lightning.__version__


def test_installed_wheel_runs_the_demo_from_another_folder(wheel, tmp_path):
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "offline"}

    def clsvit(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", "from clsvit_lightning.cli import main; main()", *args],
            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    path = Path(clsvit("config", "path", "pretrain/dinov2").strip())
    assert path.is_file() and path.is_relative_to(target)  # the installed copy, not the checkout's
    assert clsvit("--version").startswith(f"clsvit_lightning {clsvit_lightning.__version__}")
    clsvit(
        "demo", "--out", "demo", "--data_root", "data", "--pretrain_epochs", "1", "--probe_steps", "2",
        "--num_train", "40", "--num_val", "12", "--num_workers", "0", "--progress_bar", "false",
        "--specializations", "[paper]",
    )  # fmt: skip
    report = (elsewhere / "demo" / "report.md").read_text()
    assert "| `paper` | 1 |" in report and (elsewhere / "demo" / "scores.png").stat().st_size > 0
    assert (elsewhere / "data" / "imagenet" / "train").is_dir()  # the synthetic scenes, written here
