from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from torch.utils.data import DataLoader, TensorDataset

from clsvit_lightning.cli import run
from clsvit_lightning.models import VisionTransformer, load_pretrained
from clsvit_lightning.tasks.supervised import DeiT3Supervised
from clsvit_lightning.training.lamb import Lamb

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write_image_folder(root: Path, num_classes=3, per_class=(4, 2), size=40, seed=0) -> Path:
    """``root/{train,val}/class_<c>/<i>.png``: random images whose mean colour depends on the class."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "val"), per_class, strict=True):
        for label in range(num_classes):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True)
            for index in range(count):
                image = rng.integers(0, 80, (size, size, 3)) + 80 * (np.arange(3) == label % 3)
                cv2.imwrite(str(folder / f"{index}.png"), image.astype(np.uint8))
    return root


def tiny_backbone(specialization="vanilla"):
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, specialization=specialization
    )


def collate(samples):  # module level: ddp_spawn pickles the loaders
    return {"image": torch.stack([s[0] for s in samples]), "label": torch.stack([s[1] for s in samples])}


class TinyLabelled(LightningDataModule):
    """Learnable in-memory data: class ``c`` adds ``+1`` to channel ``c`` of noise images."""

    def __init__(self, num_classes=4, length=32, batch_size=8):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.labels = torch.arange(length) % num_classes
        self.images = torch.randn(length, 3, 32, 32, generator=generator)
        self.images[torch.arange(length), self.labels % 3] += 1.0
        self.batch_size = batch_size

    def _loader(self):
        return DataLoader(TensorDataset(self.images, self.labels), batch_size=self.batch_size, collate_fn=collate)

    train_dataloader = val_dataloader = _loader


def test_lamb_step_matches_the_formula():
    weight = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))
    bias = torch.nn.Parameter(torch.tensor([0.1, -0.2]))
    grads = torch.tensor([[0.3, -0.1], [0.2, 0.4]]), torch.tensor([0.05, -0.3])
    weight.grad, bias.grad = grads[0].clone(), grads[1].clone()
    lr, wd, beta1, beta2, eps = 0.1, 0.05, 0.9, 0.999, 1e-8
    optimizer = Lamb(
        [{"params": [weight], "weight_decay": wd}, {"params": [bias], "weight_decay": 0.0}],
        lr=lr, betas=(beta1, beta2), eps=eps,
    )  # fmt: skip
    before = weight.detach().clone(), bias.detach().clone()
    optimizer.step()
    # Step 1: bias-corrected moments are g and g^2, so the Adam direction is g / (|g| + eps).
    adam = [g / (g.abs() + eps) for g in grads]
    update = adam[0] + wd * before[0]
    trust_ratio = before[0].norm() / update.norm()
    torch.testing.assert_close(weight.detach(), before[0] - lr * trust_ratio * update)
    torch.testing.assert_close(bias.detach(), before[1] - lr * adam[1])  # no decay: no trust ratio


def test_bce_targets_are_binarised_after_mixing():
    torch.manual_seed(0)
    module = DeiT3Supervised(tiny_backbone(), num_classes=4, mixup_alpha=0.0, cutmix_alpha=1.0)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    _, targets = module.training_targets(images, labels)
    # Image b is mixed with image 3 - b: both its labels are positives.
    expected = torch.zeros(4, 4)
    expected[torch.arange(4), labels] = 1.0
    expected[torch.arange(4), labels.flip(0)] = 1.0
    torch.testing.assert_close(targets, expected)
    soft = DeiT3Supervised(tiny_backbone(), num_classes=4, bce_target_threshold=None)
    torch.testing.assert_close(soft.training_targets(images, labels)[1].sum(dim=1), torch.ones(4))


@pytest.mark.parametrize("optimizer", ["lamb", "adamw"])
def test_the_loss_decreases_over_a_short_fixed_seed_run(tmp_path, optimizer):
    seed_everything(0)
    module = DeiT3Supervised(
        tiny_backbone("paper"), num_classes=4, optimizer=optimizer, base_lr=3e-3, warmup_epochs=1, min_lr=1e-4
    )
    losses = []
    original = module.training_step

    def recording_step(batch, batch_idx):
        loss = original(batch, batch_idx)
        losses.append(loss.item())
        return loss

    module.training_step = recording_step
    trainer = Trainer(
        default_root_dir=tmp_path, max_epochs=5, accelerator="cpu", devices=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, deterministic=True,
    )  # fmt: skip
    trainer.fit(module, TinyLabelled())
    assert trainer.global_step == 20
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    # Warmup from warmup_lr to base_lr over the first epoch, then cosine to min_lr.
    lr = module.schedules["lr"]
    assert lr[0] == pytest.approx(1e-6) and lr.max() == pytest.approx(3e-3) and lr[-1] > 1e-4
    assert 0.0 <= trainer.callback_metrics["val/top1"] <= 1.0


def test_num_classes_must_match_the_datamodule(tmp_path):
    data = TinyLabelled(num_classes=4)
    data.num_classes = 4
    trainer = Trainer(default_root_dir=tmp_path, max_steps=1, accelerator="cpu", logger=False)
    with pytest.raises(ValueError, match="model num_classes=10 but the datamodule has 4 classes"):
        trainer.fit(DeiT3Supervised(tiny_backbone(), num_classes=10), data)


def test_validation_on_two_ranks_counts_each_sample_once(tmp_path):
    # 13 images over 2 ranks: the sampler repeats one on rank 1; accuracy is still over the 13.
    data = TinyLabelled(num_classes=4, length=13, batch_size=4)
    module = DeiT3Supervised(tiny_backbone(), num_classes=4)
    with torch.no_grad():
        expected = (module.eval()(data.images).argmax(dim=1) == data.labels).float().mean().item()
    options = dict(
        default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    assert Trainer(devices=1, **options).validate(module, data, verbose=False)[0]["val/top1"] == pytest.approx(expected)
    two_ranks = Trainer(devices=2, strategy="ddp_spawn", **options).validate(module, data, verbose=False)[0]
    assert two_ranks["val/top1"] == pytest.approx(expected)


def test_a_few_steps_through_the_cli_on_an_image_folder(tmp_path):
    root = write_image_folder(tmp_path / "imagenet")
    cli = run(
        [
            "fit",
            "--config", str(CONFIGS / "supervised/deit3_base.yaml"),
            "--config", str(CONFIGS / "supervised/tiny_synthetic.yaml"),
            "--model.init_args.backbone.init_args.specialization", "paper",
            "--model.init_args.backbone.init_args.embed_dim", "32",
            "--model.init_args.backbone.init_args.depth", "2",
            "--model.init_args.num_classes", "3",
            "--data.init_args.root", str(root),
            "--data.init_args.batch_size", "4",
            "--data.init_args.num_workers", "0",
            "--trainer.max_epochs", "1",
            "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path / "run"),
        ]
    )  # fmt: skip
    assert cli.trainer.global_step == 3  # 12 images, batch 4
    assert isinstance(cli.model, DeiT3Supervised) and cli.model.hparams.optimizer == "lamb"
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    # The Lightning checkpoint is a backbone for the classification evaluations.
    checkpoint = next((tmp_path / "run").rglob("last.ckpt"))
    backbone = VisionTransformer(**cli.model.backbone.config)
    load_pretrained(backbone, checkpoint)
    for key, value in cli.model.backbone.state_dict().items():
        torch.testing.assert_close(backbone.state_dict()[key], value, msg=key)
    assert torch.load(checkpoint, weights_only=True)["backbone_config"] == cli.model.backbone.config
    # The checkpoint validates through the CLI (its hyperparameters are valid init arguments).
    validated = run([
        "validate",
        "--config", str(CONFIGS / "supervised/deit3_base.yaml"),
        "--config", str(CONFIGS / "supervised/tiny_synthetic.yaml"),
        "--config", str(next((tmp_path / "run").rglob("config.yaml"))),
        "--ckpt_path", str(checkpoint),
        "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    assert 0 <= validated.trainer.callback_metrics["val/top1"] <= 1


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [("base_lr", 0.0, "> 0"), ("base_lr", -3e-3, "> 0"), ("weight_decay", -0.05, ">= 0"), ("min_lr", -1e-5, ">= 0")],
)
def test_bad_option_values_are_refused_by_name(option, value, expected):
    from clsvit_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match=f"DeiT3Supervised: {option} must be {expected}, got {value}"):
        DeiT3Supervised(tiny_backbone(), num_classes=4, **{option: value})
