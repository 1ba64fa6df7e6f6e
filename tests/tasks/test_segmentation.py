"""SemanticSegmentation: frozen probes, pretrained weights, schedule, training, evaluation, and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from torch.utils.data import DataLoader

from clsvit_lightning.evaluation.segmentation_metrics import scores_from_confusion_matrix
from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining
from clsvit_lightning.tasks.segmentation import SemanticSegmentation

NUM_CLASSES = 3
COLOURS = torch.tensor([[1.5, -1.0, -1.0], [-1.0, 1.5, -1.0], [-1.0, -1.0, 1.5]])  # normalised RGB per class


def tiny_backbone(depth=2, **kwargs):
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=depth, num_heads=2, **kwargs)


def tiny_model(mode="linear", depth=2, **kwargs):
    defaults = dict(num_classes=NUM_CLASSES, mode=mode, warmup_steps=0, inference="whole", crop_size=32, stride=16)
    return SemanticSegmentation(tiny_backbone(depth), **{**defaults, **kwargs})


def scene(seed, height=32, width=32):
    """A colour-coded scene: two random rectangles of class colours on a class background, 255 border."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.full((height, width), int(torch.randint(NUM_CLASSES, (1,), generator=gen)))
    for _ in range(2):
        top, left = (int(torch.randint(s - 8, (1,), generator=gen)) for s in (height, width))
        mask[top : top + 12, left : left + 12] = int(torch.randint(NUM_CLASSES, (1,), generator=gen))
    image = COLOURS[mask].permute(2, 0, 1) + 0.3 * torch.randn(3, height, width, generator=gen)
    mask[:, :2] = 255  # ignored column
    return {"image": image, "mask": mask, "image_size": torch.tensor([height, width])}


def padded_collate(samples):
    """Batch samples of different sizes the way ``collate_dense`` does (bottom/right padding, mask 255)."""
    height = max(s["image"].shape[1] for s in samples)
    width = max(s["image"].shape[2] for s in samples)
    images = torch.zeros(len(samples), 3, height, width)
    masks = torch.full((len(samples), height, width), 255, dtype=torch.long)
    for i, s in enumerate(samples):
        images[i, :, : s["image"].shape[1], : s["image"].shape[2]] = s["image"]
        masks[i, : s["mask"].shape[0], : s["mask"].shape[1]] = s["mask"]
    return {"image": images, "mask": masks, "image_size": torch.stack([s["image_size"] for s in samples])}


class TinyScenes(LightningDataModule):
    def __init__(self, num_train=32, val_sizes=((32, 32), (27, 40), (40, 21))):
        super().__init__()
        self.train = [scene(i) for i in range(num_train)]
        self.val = [scene(1000 + i, *size) for i, size in enumerate(val_sizes)]

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=8, shuffle=True, collate_fn=padded_collate)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=3, collate_fn=padded_collate)


def trainer(tmp_path, **kwargs):
    options = dict(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )  # fmt: skip
    return Trainer(**{**options, **kwargs})


# ------------------------------------------------------------------------------------------ modes
def test_linear_probe_keeps_the_backbone_frozen_and_in_eval_mode():
    model = tiny_model("linear")
    model.backbone.blocks[0].drop_path1 = torch.nn.Dropout(0.5)  # would make train mode visible
    model.train()
    assert not model.backbone.training and model.predictor.head.training
    assert all(not p.requires_grad for p in model.backbone.parameters())
    batch = padded_collate([scene(0), scene(1)])
    model.training_step(batch, 0).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.predictor.head.parameters())
    optimizer_params = {id(p) for g in model.configure_optimizers().param_groups for p in g["params"]}
    assert optimizer_params == {id(p) for p in model.predictor.head.parameters()}


def test_multilayer_probe_concatenates_the_last_four_blocks():
    model = tiny_model("multilayer", depth=5)
    assert model.predictor.features.blocks == [1, 2, 3, 4]
    assert model.predictor.head.conv.weight.shape == (NUM_CLASSES, 4 * 32, 1, 1)  # no [CLS] channels
    with pytest.raises(ValueError, match="mode='multilayer' concatenates the last 4 blocks; the backbone has 2"):
        tiny_model("multilayer", depth=2)


def test_finetuning_trains_the_backbone_with_layerwise_lr_decay():
    model = tiny_model("finetune", layerwise_decay=0.5)
    model.train()
    assert model.backbone.training and all(p.requires_grad for p in model.backbone.parameters())
    groups = model.configure_optimizers().param_groups
    multiplier = {id(p): g["lr_multiplier"] for g in groups for p in g["params"]}
    assert multiplier[id(model.backbone.blocks[0].attn.qkv.weight)] == 0.5**2  # depth 2: block 0 -> 0.5^(3-1)
    assert multiplier[id(model.backbone.blocks[1].attn.qkv.weight)] == 0.5
    assert multiplier[id(model.predictor.head.conv.weight)] == 1.0


def test_unknown_mode_and_class_names_are_rejected():
    with pytest.raises(ValueError, match="mode must be one of"):
        tiny_model("probe")
    with pytest.raises(ValueError, match="2 class_names for num_classes=3"):
        tiny_model(class_names=["a", "b"])


# ------------------------------------------------------------------------------------- pretrained
def test_pretrained_exported_backbone_file_gives_the_backbone_its_weights(tmp_path):
    source = tiny_backbone(specialization="paper")
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / "backbone.pth"
    torch.save({"model": source.state_dict(), "backbone_config": source.config}, path)
    model = SemanticSegmentation(tiny_backbone(specialization="paper"), NUM_CLASSES, pretrained=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    assert model.hparams.pretrained == str(path)
    assert model.hparams.backbone["init_args"]["specialization"] == source.config["specialization"]


def test_pretraining_checkpoint_gives_the_teacher_features(tmp_path):
    pretraining = DINOv2Pretraining(
        tiny_backbone(specialization="paper"), num_prototypes=16, head_hidden_dim=16, head_bottleneck_dim=8
    )
    with torch.no_grad():  # teacher != student, so the test tells them apart
        for p in pretraining.teacher.parameters():
            p.add_(0.1 * torch.randn_like(p))
    path = tmp_path / "pretraining.ckpt"
    torch.save({"state_dict": pretraining.state_dict(), "hyper_parameters": dict(pretraining.hparams)}, path)
    model = SemanticSegmentation(tiny_backbone(specialization="paper"), NUM_CLASSES, pretrained=str(path))
    images = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        expected = pretraining.teacher_backbone.get_intermediate_layers(images, n=1, reshape=True)[0]
        student = pretraining.student["backbone"].get_intermediate_layers(images, n=1, reshape=True)[0]
        features = model.predictor.features(images)  # [B, D, h, w]
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
    assert not torch.allclose(features, student)


# ---------------------------------------------------------------------------------------- forward
def test_sides_not_divisible_by_the_patch_size_are_padded_and_cropped_back():
    model = tiny_model().eval()
    images = torch.randn(2, 3, 37, 45)
    with torch.no_grad():
        logits = model(images)
        assert logits.shape == (2, NUM_CLASSES, 37, 45)
        # A single window covering the image is the whole-image pass (padding inside the window).
        model.hparams.update(inference="slide", crop_size=48, stride=32)
        torch.testing.assert_close(model.predict_probabilities(images), logits.softmax(1))


# ---------------------------------------------------------------------------- training / evaluation
def test_a_few_training_steps_reduce_the_loss(tmp_path):
    seed_everything(0)
    model = tiny_model(lr=3e-2)
    losses = []
    original = model.training_step

    def recording_step(batch, batch_idx):
        loss = original(batch, batch_idx)
        losses.append(loss.item())
        return loss

    model.training_step = recording_step
    trainer(tmp_path, max_steps=16, limit_val_batches=0).fit(model, TinyScenes())
    assert len(losses) == 16
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4])
    assert model.lr_schedule[0] == 1.0 and model.lr_schedule[-1] == pytest.approx(1 / 16)


def test_validation_miou_is_the_dataset_level_score_of_each_image_at_its_own_size(tmp_path):
    model = tiny_model(class_names=["red", "green", "blue"], inference="slide", crop_size=24, stride=16)
    data = TinyScenes()
    results = trainer(tmp_path).validate(model, data)[0]
    confmat = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    model.eval()
    for sample in data.val:  # independently: one image at a time, no batch padding
        with torch.no_grad():
            pred = model.predict_probabilities(sample["image"][None]).argmax(1)[0]  # = predict_labels
        keep = sample["mask"] != 255
        confmat += torch.bincount(sample["mask"][keep] * NUM_CLASSES + pred[keep], minlength=9).view(3, 3)
    assert results["val/mIoU"] == pytest.approx(scores_from_confusion_matrix(confmat)["mIoU"].item(), abs=1e-6)
    table = (tmp_path / "segmentation" / "val_per_class_step0000000.csv").read_text().splitlines()
    assert table[0].startswith("class_id,name,iou") and table[1].split(",")[1] == "red"


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_fit_then_validate_on_synthetic_ade20k(tmp_path):
    from clsvit_lightning.cli import run
    from clsvit_lightning.data.synthetic.writers import write_synthetic

    write_synthetic(tmp_path / "synth", ("ade20k",), num_train=8, num_val=2, num_classes=3, size_range=(40, 56))
    info = json.loads((tmp_path / "synth" / "ade20k" / "synth_info.json").read_text())
    backbone = tiny_backbone()
    torch.save({"model": backbone.state_dict(), "backbone_config": backbone.config}, tmp_path / "backbone.pth")
    common = [
        "--config", "configs/dense/demo_synthetic_linear.yaml",
        "--trainer.default_root_dir", str(tmp_path / "run"),
        "--trainer.accelerator", "cpu",
        "--model.init_args.backbone.init_args.img_size", "32",
        "--model.init_args.backbone.init_args.embed_dim", "32",
        "--model.init_args.backbone.init_args.depth", "2",
        "--model.init_args.backbone.init_args.num_heads", "2",
        "--model.init_args.pretrained", str(tmp_path / "backbone.pth"),
        "--model.init_args.num_classes", str(info["num_segmentation_classes"]),
        "--model.init_args.class_names", json.dumps(info["segmentation_classes"]),
        "--model.init_args.crop_size", "32",
        "--model.init_args.stride", "24",
        "--data.init_args.root", str(tmp_path / "synth" / "ade20k"),
        "--data.init_args.num_classes", str(info["num_segmentation_classes"]),
        "--data.init_args.crop_size", "32",
        "--data.init_args.base_size", "40",
        "--data.init_args.batch_size", "4",
        "--data.init_args.num_workers", "0",
    ]  # fmt: skip
    run(["fit", *common, "--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--trainer.logger", "false"])
    checkpoint = next((tmp_path / "run").rglob("last.ckpt"))
    cli = run(["validate", *common, "--ckpt_path", str(checkpoint), "--trainer.logger", "false"])
    metrics = cli.trainer.callback_metrics
    assert 0.0 <= float(metrics["val/mIoU"]) <= 1.0 and "val/aAcc" in metrics
    tables = sorted(Path(tmp_path / "run").rglob("val_per_class_step*.csv"))
    assert tables and "background" in tables[-1].read_text()


@pytest.mark.parametrize(
    ("scales", "flip", "short_side"), [((1.0,), False, None), ((1.0,), False, 40), ((1.0, 1.5), True, None)]
)
def test_predicted_labels_are_the_argmax_of_the_tta_probabilities(scales, flip, short_side):
    options = dict(tta_scales=scales, tta_flip=flip, test_short_side=short_side)
    model = tiny_model(inference="slide", crop_size=24, stride=16, **options).eval()
    images = torch.randn(2, 3, 30, 41)
    labels = model.predict_labels(images)
    assert labels.shape == (2, 30, 41)
    assert torch.equal(labels, model.predict_probabilities(images).argmax(1))


@pytest.mark.parametrize(("option", "value", "expected"), [("lr", 0.0, "> 0"), ("weight_decay", -1e-4, ">= 0")])
def test_bad_optimizer_values_are_refused_by_name(option, value, expected):
    from clsvit_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match=f"SemanticSegmentation: {option} must be {expected}, got {value}"):
        tiny_model(**{option: value})


def test_a_frozen_probe_without_pretrained_weights_warns_that_the_backbone_is_random(recwarn):
    with pytest.warns(UserWarning, match="SemanticSegmentation: pretrained is null, so the backbone is randomly"):
        tiny_model("linear")
    recwarn.clear()
    tiny_model("finetune")  # training the backbone from scratch is a choice, not an oversight
    assert not [w for w in recwarn if "randomly initialised" in str(w.message)]
