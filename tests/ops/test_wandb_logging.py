"""W&B from the CLI config: offline by itself without credentials, names/tags/summary from the model,
and a config that survives a second run (a requeue) into the same folder."""

from pathlib import Path

import pytest
import wandb
import yaml
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from clsvit_lightning.callbacks import SaveConfigToLoggers
from clsvit_lightning.callbacks.save_config import RUN_CONFIG_NAME
from clsvit_lightning.cli import run
from clsvit_lightning.ops import has_wandb_credentials, resolve_wandb_mode

REPO = Path(__file__).resolve().parents[2]
TINY = ["--config", str(REPO / "tests/ops/tiny_pretrain.yaml"), "--config", str(REPO / "configs/logging/wandb.yaml")]


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("SLURM_JOB_ID", "SLURM_NTASKS", "WANDB_SWEEP_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / ".config" / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield
    wandb.finish()
    # wandb keeps process-wide settings read from this test's environment (no WANDB_MODE, a
    # temporary HOME): reset them, or a later offline WandbLogger in the same process asks for a key.
    wandb.teardown()


def fit_args(tmp_path: Path, *extra: str) -> list[str]:
    folders = [f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    return ["fit", *TINY, "--trainer.max_epochs=1", *folders, *extra]


def test_a_run_without_credentials_goes_offline_and_writes_under_save_dir(no_credentials, tmp_path):
    assert not has_wandb_credentials()
    cli = run(fit_args(tmp_path, "--model.backbone.specialization=paper", "--model.backbone.num_registers=4"))
    logger = cli.trainer.logger
    assert logger.mode == "offline"
    experiment = logger.experiment
    assert experiment.name == "vit_d32x2_p8-paper-reg4"
    assert {"spec:paper", "registers:4"} <= set(experiment.tags)
    assert experiment.summary["backbone/params_overhead"] > 0
    assert experiment.summary["backbone/gflops_per_image"] > 0
    wandb.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run_dir.glob("run-*.wandb"))
    assert (tmp_path / "config.yaml").is_file()


def test_the_config_survives_a_second_run_into_the_same_folder(no_credentials, tmp_path):
    configs = []
    for _ in range(2):  # a requeue restarts the same command into the same folder
        cli = LightningCLI(
            LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            save_config_callback=SaveConfigToLoggers, args=fit_args(tmp_path),
        )  # fmt: skip
        configs.append(Path(cli.trainer.logger.experiment.dir) / RUN_CONFIG_NAME)
        wandb.finish()
    shared = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert len(set(configs)) == 2
    for path in configs:  # every W&B run keeps the config it ran with
        assert yaml.safe_load(path.read_text()) == shared
    assert shared["trainer"]["logger"]["class_path"] == "clsvit_lightning.ops.ClsvitWandbLogger"


def test_mode_decision(tmp_path):
    home = {"HOME": str(tmp_path)}
    assert resolve_wandb_mode("auto", home) == "offline"
    assert resolve_wandb_mode("auto", {**home, "WANDB_API_KEY": "x" * 40}) == "online"
    assert resolve_wandb_mode("auto", {**home, "WANDB_API_KEY": "k", "WANDB_MODE": "dryrun"}) == "offline"
    assert resolve_wandb_mode("auto", {**home, "WANDB_MODE": "disabled"}) == "disabled"
    assert resolve_wandb_mode("online", home) == "online"  # explicit: the user asked for it
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine example.org login user password secret\n")
    assert resolve_wandb_mode("auto", home) == "offline"
    netrc.write_text("machine api.wandb.ai login user password secret\n")
    netrc.chmod(0o600)
    assert resolve_wandb_mode("auto", home) == "online"
    assert resolve_wandb_mode("auto", {**home, "WANDB_BASE_URL": "https://wandb.mycorp.org"}) == "offline"
    with pytest.raises(ValueError, match="mode must be"):
        resolve_wandb_mode("sometimes", home)


def test_the_log_line_gives_the_reason_for_the_mode(tmp_path):
    from clsvit_lightning.ops.wandb_logger import wandb_mode_reason

    home = {"HOME": str(tmp_path)}
    assert wandb_mode_reason("auto", home) == "no credentials found"
    assert wandb_mode_reason("auto", {**home, "WANDB_API_KEY": "x" * 40}) == "credentials found"
    assert wandb_mode_reason("auto", {**home, "WANDB_API_KEY": "x" * 40, "WANDB_MODE": "disabled"}) == (
        "WANDB_MODE=disabled"
    )
    assert wandb_mode_reason("offline", home) == "requested"
