"""Every task on a tiny DINOv3 backbone (RoPE, storage tokens, SwiGLU, masked key bias) loaded from an
official-layout checkpoint: dense probes, k-NN, the linear probe, and the DINOv2 recipe's configs."""

import pytest
import torch
import yaml

from clsvit_lightning.cli import run
from clsvit_lightning.evaluation.knn import knn_classify
from clsvit_lightning.models import VisionTransformer, dinov3_backbone_config, from_pretrained
from clsvit_lightning.models.dinov3_keys import DINOv3Arch, dinov3_state_dict_shapes
from clsvit_lightning.tasks.depth import MonocularDepth
from clsvit_lightning.tasks.knn_evaluation import KNNEvaluation
from clsvit_lightning.tasks.linear_probe import LinearProbe
from clsvit_lightning.tasks.segmentation import SemanticSegmentation
from tests.models.dinov3_reference import random_state_dict, reference_forward
from tests.tasks.test_depth import TinyDepth
from tests.tasks.test_knn_evaluation import TinyBankAndQueries
from tests.tasks.test_linear_probe import TinyLabelled, quiet_trainer
from tests.tasks.test_segmentation import NUM_CLASSES, TinyScenes, trainer

ARCH = DINOv3Arch(32, 4, 4, ffn_ratio=3, ffn_layer="swiglu", patch_size=8)  # 4 storage tokens


def backbone(**kwargs):
    return VisionTransformer(**{**dinov3_backbone_config(ARCH, img_size=32), **kwargs})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An official DINOv3 training checkpoint layout: ``{"teacher": {"backbone.*": ...}}``."""
    state = random_state_dict(dinov3_state_dict_shapes(ARCH), seed=0)
    path = tmp_path_factory.mktemp("dinov3") / "teacher_checkpoint.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in state.items()}}, path)
    return path, state


def test_segmentation_probe_trains_a_step_and_validates_non_square_images(tmp_path, checkpoint):
    path, state = checkpoint
    model = SemanticSegmentation(
        backbone(specialization="paper"), NUM_CLASSES, pretrained=str(path), warmup_steps=0, inference="slide",
        crop_size=32, stride=16,
    )  # fmt: skip
    images = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        features = model.predictor.features(images)  # [B, D, h, w]: the last block, normed
    expected = reference_forward(state, images)["x_norm_patchtokens"].reshape(2, 4, 5, 32).permute(0, 3, 1, 2)
    torch.testing.assert_close(features.double(), expected, atol=1e-5, rtol=1e-5)
    fit = trainer(tmp_path, max_steps=1, limit_val_batches=1)
    fit.fit(model, TinyScenes(num_train=8))  # val sizes 32x32, 27x40, 40x21
    assert fit.global_step == 1 and 0 <= fit.callback_metrics["val/mIoU"] <= 1


def test_depth_probe_trains_a_step(tmp_path, checkpoint):
    path, _ = checkpoint
    model = MonocularDepth(backbone(), pretrained=str(path), warmup_steps=0, num_bins=16, upsample=2)
    fit = trainer(tmp_path, max_steps=1, limit_val_batches=0)
    fit.fit(model, TinyDepth())
    assert fit.global_step == 1
    assert trainer(tmp_path).validate(model, TinyDepth(), verbose=False)[0]["val/rmse"] > 0


def test_knn_matches_brute_force_on_the_dinov3_features(tmp_path, checkpoint):
    path, state = checkpoint
    data = TinyBankAndQueries()
    module = KNNEvaluation(backbone(), pretrained=str(path), ks=(1, 3), temperature=0.07)
    metrics = quiet_trainer(tmp_path).validate(module, data, verbose=False)[0]
    bank_images, bank_labels = data.splits["train"].tensors
    query_images, query_labels = data.splits["val"].tensors
    bank = reference_forward(state, bank_images)["x_norm_clstoken"].float()
    queries = reference_forward(state, query_images)["x_norm_clstoken"].float()
    for result in knn_classify(bank, bank_labels, queries, query_labels, (1, 3), 0.07, num_classes=4):
        for name, value in result.as_dict("knn").items():
            assert metrics[name] == pytest.approx(value, abs=1e-4), name


def test_linear_probe_trains_a_step(tmp_path, checkpoint):
    path, _ = checkpoint
    module = LinearProbe(backbone(), num_classes=3, pretrained=str(path), n_last_blocks_options=[1, 4])
    fit = quiet_trainer(tmp_path, max_steps=1)
    fit.fit(module, TinyLabelled(batch_size=8))
    assert fit.global_step == 1 and module.best_head in module.heads


# ------------------------------------------------------------------------------ the recipe
@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    run(["synth", "--out", str(out), "--kind", "imagenet", "--num_train", "16", "--num_val", "4",
         "--num_classes", "4", "--size_range", "[40, 56]"])  # fmt: skip
    return out / "imagenet"


@pytest.mark.parametrize("specialization", ["vanilla", "paper"])
def test_the_dinov3_pretraining_overlays_parse_and_train_a_step(tmp_path, imagenet_root, capsys, specialization):
    overlay = f"configs/pretrain/vits16_dinov3_{specialization}.yaml"
    configs = ["--config", "configs/pretrain/dinov2.yaml", "--config", overlay]
    with pytest.raises(SystemExit):
        run(["fit", *configs, "--print_config"])
    parsed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["backbone"]["init_args"]
    expected = {**dinov3_backbone_config("vits16"), "specialization": specialization}  # DINOv3's ViT-S/16
    assert {key: parsed[key] for key in expected} == expected
    # One tiny step: the tiny recipe's sizes (patch 8, 64 px), shrunk to 2 blocks of width 32.
    cli = run([
        "fit", *configs, "--config", "configs/pretrain/tiny_synthetic.yaml",
        "--data.init_args.root", str(imagenet_root),
        "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0", "--trainer.max_steps", "1",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
        "--trainer.callbacks", "[]", "--model.init_args.backbone.init_args.depth", "2",
        "--model.init_args.backbone.init_args.embed_dim", "32", "--model.init_args.backbone.init_args.num_heads", "2",
    ])  # fmt: skip
    assert cli.trainer.global_step == 1
    teacher = cli.model.teacher_backbone
    assert teacher.rope_embed is not None and teacher.num_registers == 4 and teacher.norm.eps == 1e-5
    assert teacher.spec.to_string() == VisionTransformer(specialization=specialization).spec.to_string()
    cli.trainer.save_checkpoint(tmp_path / "step1.ckpt")
    restored = from_pretrained(tmp_path / "step1.ckpt")  # the architecture from the checkpoint's backbone_config
    assert restored.config == teacher.config
    images = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(restored(images), teacher.eval()(images))


@pytest.mark.parametrize(
    ("command", "config", "overlay"),
    [
        ("fit", "configs/dense/ade20k_linear.yaml", "configs/pretrain/vits16_dinov3_paper.yaml"),
        ("fit", "configs/dense/nyu_depth_linear.yaml", "configs/pretrain/vits16_dinov3_vanilla.yaml"),
        ("validate", "configs/classification/knn.yaml", "configs/classification/vits16_dinov3.yaml"),
        ("fit", "configs/classification/linear.yaml", "configs/classification/vits16_dinov3.yaml"),
    ],
)
def test_the_probe_configs_take_the_dinov3_backbone_overlay(capsys, command, config, overlay):
    with pytest.raises(SystemExit):
        run([command, "--config", config, "--config", overlay, "--print_config"])
    parsed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["backbone"]["init_args"]
    expected = dinov3_backbone_config("vits16")
    keys = [
        k for k in expected if k not in ("img_size", "specialization")
    ]  # the probe's resolution; the checkpoint's spec
    assert {k: parsed[k] for k in keys} == {k: expected[k] for k in keys}
