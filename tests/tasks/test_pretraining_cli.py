"""`clsvit fit` on the shipped configs, on synthetic scenes written in the ImageNet layout."""

import pytest
import torch

from clsvit_lightning.cli import run
from clsvit_lightning.models import VisionTransformer, load_pretrained


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    run(["synth", "--out", str(out), "--kind", "imagenet", "--num_train", "40", "--num_val", "10",
         "--num_classes", "4", "--size_range", "[40, 56]"])  # fmt: skip
    return out / "imagenet"


@pytest.mark.parametrize("specialization", ["vanilla", "paper"])
def test_fit_through_the_cli_then_export(tmp_path, imagenet_root, specialization):
    cli = run([
        "fit", "--config", "configs/pretrain/dinov2.yaml", "--config", "configs/pretrain/tiny_synthetic.yaml",
        "--data.init_args.root", str(imagenet_root), "--data.init_args.batch_size", "8",
        "--data.init_args.num_workers", "0", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
        "--model.init_args.backbone.init_args.depth", "2",
        "--model.init_args.backbone.init_args.specialization", specialization,
    ])  # fmt: skip
    assert cli.trainer.global_step == 3
    module = cli.model
    assert module.teacher_backbone.spec.to_string() == VisionTransformer(specialization=specialization).spec.to_string()
    checkpoint = next(tmp_path.rglob("last.ckpt"))
    run(["export", "--ckpt", str(checkpoint), "--out", str(tmp_path / "backbone.pth")])
    restored = VisionTransformer(**torch.load(tmp_path / "backbone.pth", weights_only=True)["backbone_config"])
    load_pretrained(restored, tmp_path / "backbone.pth")
    assert torch.equal(restored.pos_embed, module.teacher_backbone.pos_embed)


def test_bad_config_values_are_named(tmp_path, imagenet_root, capsys):
    with pytest.raises(SystemExit):
        run([
            "fit", "--config", "configs/pretrain/dinov2.yaml", "--config", "configs/pretrain/tiny_synthetic.yaml",
            "--data.init_args.root", str(imagenet_root), "--model.init_args.teacher_targets", "sinkhorn",
        ])  # fmt: skip
    assert "teacher_targets" in capsys.readouterr().err


def test_a_mistyped_option_is_an_error_not_a_prefix_match(imagenet_root, capsys):
    with pytest.raises(SystemExit):
        run([
            "fit", "--config", "configs/pretrain/dinov2.yaml", "--config", "configs/pretrain/tiny_synthetic.yaml",
            "--data.init_args.root", str(imagenet_root), "--trainer.max_step", "1", "--print_config",
        ])  # fmt: skip
    assert "unrecognized arguments: --trainer.max_step" in capsys.readouterr().err
