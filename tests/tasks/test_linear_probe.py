from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from clsvit_lightning.cli import run
from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.tasks.linear_probe import LinearProbe, create_linear_input, head_name
from tests.tasks.test_supervised import write_image_folder

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny_backbone(depth=4):
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=depth, num_heads=2, specialization="paper", layerscale_init=None
    )


def collate(samples):
    return {"image": torch.stack([s[0] for s in samples]), "label": torch.stack([s[1] for s in samples])}


class TinyLabelled(LightningDataModule):
    def __init__(self, length=24, num_classes=3, batch_size=8):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        labels = torch.arange(length) % num_classes
        self.data = TensorDataset(torch.randn(length, 3, 32, 32, generator=generator), labels)
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size, collate_fn=collate)

    val_dataloader = train_dataloader


def quiet_trainer(tmp_path, **kwargs):
    return Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, **kwargs,
    )  # fmt: skip


def test_features_are_the_backbones_intermediate_layers_in_block_order():
    module = LinearProbe(tiny_backbone(), num_classes=3, learning_rates=[0.01])
    images = torch.randn(2, 3, 32, 32)
    blocks = module.extract(images)
    with torch.no_grad():
        expected = module.backbone.get_intermediate_layers(images, n=4, return_class_token=True)
        last_block = module.backbone.forward_features(images)
    assert len(blocks) == 4
    for (patches, cls), (expected_patches, expected_cls) in zip(blocks, expected, strict=True):
        torch.testing.assert_close(patches, expected_patches)
        torch.testing.assert_close(cls, expected_cls)
    # The last block's normed outputs are forward_features' (the final norm is applied).
    torch.testing.assert_close(blocks[-1][1], last_block["x_norm_clstoken"])
    # [cls_0, cls_1, cls_2, cls_3, mean patch of block 3]; one block: [cls_3] (+ mean patch).
    cls = [c for _, c in expected]
    torch.testing.assert_close(
        create_linear_input(blocks, 4, True), torch.cat([*cls, expected[-1][0].mean(dim=1)], dim=1)
    )
    torch.testing.assert_close(create_linear_input(blocks, 4, False), torch.cat(cls, dim=1))
    torch.testing.assert_close(create_linear_input(blocks, 1, False), cls[-1])
    torch.testing.assert_close(
        create_linear_input(blocks, 1, True), torch.cat([cls[-1], expected[-1][0].mean(dim=1)], dim=1)
    )


def test_grid_heads_have_the_input_size_of_their_features():
    module = LinearProbe(tiny_backbone(), num_classes=3, learning_rates=[0.1, 0.01])
    assert len(module.heads) == 2 * 2 * 2
    assert module.heads[head_name(4, True, 0.01)].in_features == 5 * 32
    assert module.heads[head_name(1, False, 0.1)].in_features == 32
    logits = module(torch.randn(2, 3, 32, 32))
    assert set(logits) == set(module.heads) and all(v.shape == (2, 3) for v in logits.values())


def test_under_mixed_precision_the_classifiers_run_in_fp32():
    module = LinearProbe(tiny_backbone(), num_classes=3, learning_rates=[0.1])
    images = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        blocks = module.extract(images)
        logits = module(images)
    name = head_name(4, True, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what the classifier would give under autocast
        assert module.heads[name](create_linear_input(blocks, 4, True)).dtype == torch.bfloat16
    expected = module.heads[name](create_linear_input(blocks, 4, True))  # fp32 classifier on the bf16 features
    assert logits[name].dtype == torch.float32
    torch.testing.assert_close(logits[name], expected, rtol=0, atol=0)


def test_backbone_stays_frozen_in_eval_mode_and_each_head_gets_its_own_lr(tmp_path):
    learning_rates = [0.5, 0.05, 0.005]
    module = LinearProbe(tiny_backbone(), num_classes=3, n_last_blocks_options=[1, 4], learning_rates=learning_rates)
    backbone_before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    heads_before = {k: v.clone() for k, v in module.heads.state_dict().items()}
    seen = []

    def record(batch, batch_idx):
        assert module.training and not module.backbone.training
        optimizer = module.optimizers().optimizer
        seen.append({g["head"]: (g["lr"], g["params"]) for g in optimizer.param_groups})

    module.on_train_batch_end = lambda outputs, batch, batch_idx: record(batch, batch_idx)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(module, TinyLabelled(batch_size=8))  # 3 steps per epoch, global batch 8
    assert all(p.grad is None and not p.requires_grad for p in module.backbone.parameters())
    for key, value in module.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[key]), key
    decay = module.lr_decay
    for step, groups in enumerate(seen):
        assert len(groups) == len(module.heads)
        for name, (lr, params) in groups.items():
            assert params == list(module.heads[name].parameters())  # one group per head
            assert lr == pytest.approx(module.head_learning_rates[name] * 8 / 256 * decay[step])
    # Every head moved, each with its own step size.
    for name in module.heads:
        assert not torch.equal(module.heads[name].weight, heads_before[f"{name}.weight"])
    assert 0 <= trainer.callback_metrics["linear/best_top1"] <= 100
    assert module.best_head in module.heads


def test_validation_reports_the_best_head(tmp_path):
    module = LinearProbe(tiny_backbone(depth=2), num_classes=3, n_last_blocks_options=[1], learning_rates=[0.1, 1.0])
    with (
        torch.no_grad()
    ):  # constant predictions: the first head class 0 (3 of the 7 labels), the others class 2 (2 of 7)
        for index, head in enumerate(module.heads.values()):
            head.weight.zero_()
            head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(0 if index == 0 else 2), 3).float())
    metrics = quiet_trainer(tmp_path).validate(module, TinyLabelled(length=7), verbose=False)[0]
    names = list(module.heads)
    assert metrics[f"linear/{names[0]}_top1"] == pytest.approx(100 * 3 / 7)
    assert metrics[f"linear/{names[1]}_top1"] == pytest.approx(100 * 2 / 7)
    assert metrics["linear/best_top1"] == pytest.approx(100 * 3 / 7) and module.best_head == names[0]
    assert metrics["linear/best_top5"] == pytest.approx(100.0)  # 3 classes: always within the top 5


def test_bad_grid_options_name_themselves():
    with pytest.raises(ValueError, match=r"n_last_blocks_options must lie in 1..4"):
        LinearProbe(tiny_backbone(), n_last_blocks_options=[5])
    with pytest.raises(ValueError, match="learning_rates must be non-empty"):
        LinearProbe(tiny_backbone(), learning_rates=[])


def test_linear_probe_of_a_saved_backbone_through_the_cli(tmp_path):
    root = write_image_folder(tmp_path / "imagenet")
    backbone = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2)
    torch.save({"model": backbone.state_dict()}, tmp_path / "backbone.pth")
    cli = run(
        [
            "fit",
            "--config", str(CONFIGS / "classification/linear.yaml"),
            "--model.init_args.backbone.init_args.img_size", "32",
            "--model.init_args.backbone.init_args.patch_size", "8",
            "--model.init_args.backbone.init_args.embed_dim", "32",
            "--model.init_args.backbone.init_args.depth", "4",
            "--model.init_args.backbone.init_args.num_heads", "2",
            "--model.init_args.pretrained", str(tmp_path / "backbone.pth"),
            "--model.init_args.num_classes", "3",
            "--model.init_args.learning_rates", "[0.01, 0.1]",
            "--data.init_args.root", str(root),
            "--data.init_args.batch_size", "4",
            "--data.init_args.num_workers", "0",
            "--data.init_args.crop_size", "32",
            "--data.init_args.resize_size", "36",
            "--trainer.max_epochs", "1",
            "--trainer.precision", "32-true",
            "--trainer.accelerator", "cpu",
            "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path / "run"),
        ]
    )  # fmt: skip
    module = cli.model
    for key, value in backbone.state_dict().items():
        assert torch.equal(module.backbone.state_dict()[key], value), key
    assert cli.trainer.global_step == 3 and len(module.heads) == 8
    assert "linear/best_top1" in cli.trainer.callback_metrics
    last = next((tmp_path / "run").rglob("last.ckpt"))
    # Written under the CLI (its hyper-parameters name the CLI's instantiator), it still loads alone.
    loaded = LinearProbe.load_from_checkpoint(last)
    assert loaded.backbone.config == module.backbone.config and loaded.heads.keys() == module.heads.keys()
    for key, value in module.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[key], value), key


def test_negative_lr_and_bad_momentum_are_refused_by_name():
    from clsvit_lightning.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"LinearProbe: learning_rates must be non-empty and all > 0, got \[0.001, -0.01\]"
    ):
        LinearProbe(tiny_backbone(), num_classes=3, learning_rates=[1e-3, -1e-2])
    with pytest.raises(ConfigError, match=r"LinearProbe: momentum must be in \[0, 1\], got 1.5"):
        LinearProbe(tiny_backbone(), num_classes=3, momentum=1.5)


def test_a_probe_without_pretrained_weights_warns_that_the_backbone_is_random():
    with pytest.warns(UserWarning, match="LinearProbe: pretrained is null, so the backbone is randomly initialised"):
        LinearProbe(tiny_backbone(), num_classes=3, learning_rates=[1e-3])
