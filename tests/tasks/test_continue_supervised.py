"""Continued supervised training (``DeiT3Supervised(pretrained=...)``): backbone and classifier from a file."""

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import seed_everything

from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.models.checkpoint import CheckpointMismatchError
from clsvit_lightning.study.proxy import NORMS_LS
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining
from clsvit_lightning.tasks.supervised import DeiT3Supervised
from tests.tasks.step_record import StepRecord, cpu_trainer
from tests.tasks.test_supervised import TinyLabelled


def backbone(specialization="vanilla"):
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, specialization=specialization
    )  # fmt: skip


def trainer(root, **kwargs):
    return cpu_trainer(root, limit_val_batches=0, **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A vanilla DeiT III run's checkpoint (backbone + 4-class classifier)."""
    root = tmp_path_factory.mktemp("deit3")
    seed_everything(0)
    module = DeiT3Supervised(backbone(), num_classes=4, warmup_epochs=1)
    trainer(root, max_steps=4).fit(module, TinyLabelled())
    return SimpleNamespace(checkpoint=next(root.rglob("*.ckpt")), module=module)


def continued(pretrained, specialization="vanilla", **kwargs):
    seed_everything(0)
    return DeiT3Supervised(backbone(specialization), pretrained=str(pretrained), num_classes=4, **kwargs)


def test_backbone_and_classifier_load_from_a_deit3_checkpoint(trained):
    module = continued(trained.checkpoint, "paper")
    assert torch.equal(module.head.weight, trained.module.head.weight)
    assert torch.equal(module.backbone.blocks[1].norm1.prefix_weight, trained.module.backbone.blocks[1].norm1.weight)


@pytest.mark.parametrize("specialization", ["paper", NORMS_LS])
def test_the_first_continued_step_gives_the_vanilla_loss(tmp_path, trained, specialization):
    losses = {}
    for spec in ("vanilla", specialization):
        record = StepRecord()
        fit = trainer(tmp_path / spec, max_steps=1, callbacks=[record])
        fit.fit(continued(trained.checkpoint, spec), TinyLabelled())
        losses[spec] = record.losses[1]
    assert losses[specialization] == losses["vanilla"]


def test_a_fresh_classifier_trains_alone_while_the_backbone_is_frozen(tmp_path, trained):
    # A pretraining checkpoint has no classifier: fresh, trained alone for the first 2 of 4 steps per epoch.
    seed_everything(0)
    pretraining = DINOv2Pretraining(backbone(), num_prototypes=16, head_hidden_dim=16, head_bottleneck_dim=8)
    path = tmp_path / "pretraining.pth"
    torch.save({"state_dict": pretraining.state_dict()}, path)
    record = StepRecord()
    module = continued(path, "paper", head_warmup_epochs=0.5, warmup_epochs=0)
    trainer(tmp_path / "run", max_steps=4, callbacks=[record]).fit(module, TinyLabelled())
    start, joined, end = record.states[0], record.states[2], module.state_dict()
    backbone_keys = [k for k in start if k.startswith("backbone.")]
    assert module.head_warmup_steps == 2
    assert all(torch.equal(joined[k], start[k]) for k in backbone_keys)
    assert not torch.equal(joined["head.weight"], start["head.weight"])
    assert any(not torch.equal(end[k], start[k]) for k in backbone_keys)


def test_a_classifier_of_another_size_is_refused(trained):
    with pytest.raises(CheckpointMismatchError, match="the head of") as error:
        DeiT3Supervised(backbone(), pretrained=str(trained.checkpoint), num_classes=5)
    assert "(4, 32)" in str(error.value) and "(5, 32)" in str(error.value)
