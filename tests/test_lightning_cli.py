"""Resume through ``clsvit fit --ckpt_path``: values given now win, fixed ones are refused, bad files named."""

from pathlib import Path

import pytest
import torch

from clsvit_lightning.lightning_cli import resume_differences, run

REPO = Path(__file__).parents[1]
TINY = ["--config", str(REPO / "tests/ops/tiny_pretrain.yaml")]


def fit(tmp_path: Path, *extra: str):
    checkpoint = [
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={tmp_path / 'ckpt'}", "--trainer.callbacks.save_last=true",
    ]  # fmt: skip
    return run(["fit", *TINY, "--trainer.default_root_dir", str(tmp_path), *checkpoint, *extra])


@pytest.fixture(scope="module")
def first_epoch(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("first")
    fit(folder, "--trainer.max_epochs=1")
    return folder / "ckpt" / "last.ckpt"


def test_an_lr_given_at_resume_is_used_and_logged(first_epoch, tmp_path, caplog):
    with caplog.at_level("INFO"):
        cli = fit(tmp_path, "--trainer.max_epochs=2", "--model.init_args.base_lr=0.01", "--ckpt_path", str(first_epoch))
    module = cli.model
    assert module.hparams.base_lr == 0.01 and cli.trainer.global_step == 8
    assert "model.init_args.base_lr = 0.01 (the checkpoint had 0.05)" in caplog.text
    # The schedule (and so every lr the optimizer ran with) comes from the value given now: with
    # `lr_scaling_rule: sqrt_wrt_1024` and batch 4, the peak is base_lr * sqrt(4 / 1024).
    assert module.schedules["lr"].max() == pytest.approx(0.01 * (4 / 1024) ** 0.5)
    assert "base_lr: 0.01" in (tmp_path / "config.yaml").read_text()


def test_a_changed_head_or_architecture_is_refused_with_names(first_epoch, tmp_path):
    with pytest.raises(SystemExit) as refused:
        fit(tmp_path, "--model.init_args.num_prototypes=32", "--model.init_args.backbone.init_args.depth=3",
            "--ckpt_path", str(first_epoch))  # fmt: skip
    message = str(refused.value)
    assert "model.init_args.num_prototypes: 64 in the checkpoint, 32 requested" in message
    assert "model.init_args.backbone.init_args.depth: 2 in the checkpoint, 3 requested" in message


@pytest.mark.parametrize(
    "content, why", [(b"", "an empty file"), (b"not a checkpoint", "truncated or not a torch checkpoint")]
)
def test_an_unreadable_checkpoint_is_named(tmp_path, content, why):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    with pytest.raises(SystemExit, match=f"--ckpt_path {bad} is {why}"):
        fit(tmp_path, "--ckpt_path", str(bad))


def test_weights_that_are_not_a_lightning_checkpoint_point_to_pretrained(tmp_path):
    weights = tmp_path / "weights.pth"
    torch.save({"model": {}}, weights)
    with pytest.raises(SystemExit, match="not a Lightning checkpoint.*--model.init_args.pretrained"):
        fit(tmp_path, "--ckpt_path", str(weights))


def test_resume_differences_compares_values_not_types():
    stored = {"base_lr": 0.05, "adamw_betas": (0.9, 0.999), "num_prototypes": 64, "_class_path": "x"}
    requested = {"base_lr": 0.05, "adamw_betas": [0.9, 0.99], "num_prototypes": 64, "backbone": {"init_args": {}}}
    changed, refused = resume_differences(requested, stored, {"depth": 2}, frozenset({"num_prototypes"}))
    assert changed == {"model.init_args.adamw_betas": ((0.9, 0.999), [0.9, 0.99])} and refused == []


def test_a_preset_and_its_resolved_spec_are_the_same_specialization():
    stored_backbone = {"depth": 6, "specialization": "norm1,ls1,norm2,ls2:all;qkv:0-1;final_norm"}
    requested = {"backbone": {"init_args": {"specialization": "paper"}}}
    assert resume_differences(requested, {}, stored_backbone, frozenset()) == ({}, [])
    requested = {"backbone": {"init_args": {"specialization": "vanilla"}}}
    assert "specialization" in resume_differences(requested, {}, stored_backbone, frozenset())[1][0]
