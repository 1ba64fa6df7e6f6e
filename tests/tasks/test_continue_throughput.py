"""FLOPs that the throughput monitor counts during and after the head warm-up of a continued run.

During the warm-up the backbone is frozen: no backward runs through it, so the student's backbone
costs one forward (the teacher's, as always, one forward too); once it joins, forward + backward
(~3x forward). What is checked is what ``ImageThroughputMonitor`` hands to Lightning's
``Throughput`` after each batch, against the formula computed here from ``models.accounting``.
"""

import pytest
import torch
from lightning.fabric.utilities.throughput import Throughput
from lightning.pytorch import Trainer, seed_everything

from clsvit_lightning.callbacks.throughput import ImageThroughputMonitor
from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.models.accounting import count_flops_per_image, count_training_flops_per_image
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining
from clsvit_lightning.tasks.supervised import DeiT3Supervised
from tests.tasks.test_supervised import TinyLabelled
from tests.tasks.tiny_ssl_data import TinySSLData


def backbone(specialization="vanilla", drop_path_rate=0.0):
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, specialization=specialization,
        drop_path_rate=drop_path_rate,
    )  # fmt: skip


@pytest.fixture
def pretrained(tmp_path):
    """A released-style file: a vanilla backbone alone, so the heads start fresh."""
    seed_everything(0)
    path = tmp_path / "backbone.pth"
    torch.save(backbone().state_dict(), path)
    return path


@pytest.fixture
def counted_flops(monkeypatch):
    """The ``flops`` the monitor passes to ``Throughput.update`` after each training batch, in order."""
    counted = []
    update = Throughput.update

    def recording(self, *, flops=None, **kwargs):
        counted.append(flops)
        return update(self, flops=flops, **kwargs)

    monkeypatch.setattr(Throughput, "update", recording)
    return counted


def fit(module, data, root, steps):
    trainer = Trainer(
        default_root_dir=root, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0, max_steps=steps,
        callbacks=[ImageThroughputMonitor(window_size=steps)],
    )  # fmt: skip
    trainer.fit(module, data)


def test_dinov2_counts_a_forward_only_student_backbone_during_the_head_warmup(tmp_path, pretrained, counted_flops):
    # 4 batches per epoch: a warm-up of 0.5 epoch is steps 0 and 1; the backbone joins at step 2.
    # Stochastic depth 0.5 (DINOv2's batch subset): the student's blocks run on half the views.
    seed_everything(0)
    module = DINOv2Pretraining(
        backbone("paper", drop_path_rate=0.5), pretrained=str(pretrained), num_prototypes=64, head_hidden_dim=48,
        head_bottleneck_dim=16, warmup_epochs=1, base_lr=0.05, lr_scaling_rule="none",
        warmup_teacher_temperature_epochs=1, freeze_last_layer_epochs=0, head_warmup_epochs=0.5,
    )  # fmt: skip
    fit(module, TinySSLData(batch_size=4, length=16), tmp_path, steps=4)
    assert module.head_warmup_steps == 2
    # A batch: 2 global crops at 32 px and 2 local ones at 16 px of 4 images, so 8 views of each.
    net = module.student["backbone"]
    student = 8 * count_training_flops_per_image(net, 8, 32) + 8 * count_training_flops_per_image(net, 8, 16)
    teacher = 8 * count_flops_per_image(net, 32)
    # By hand (D 32, 3 blocks of 454784 FLOPs at 17 tokens, 126080 at 5; patch conv 196608 and 49152;
    # blocks at half the views): student 8 * 878784 + 8 * 238272, teacher 8 * 1560960.
    assert (student, teacher) == (8_936_448, 12_487_680)
    warmup, full = int(student + teacher), int(3 * student + teacher)
    assert (warmup, full) == (21_424_128, 39_297_024)
    assert counted_flops == [warmup, warmup, full, full]
    assert module._count_flops_per_batch(next(iter(TinySSLData(4, 16).train_dataloader()))) == full


def test_deit3_counts_a_forward_only_backbone_during_the_head_warmup(tmp_path, pretrained, counted_flops):
    # 8 images a batch, 4 batches per epoch: the classifier trains alone for steps 0 and 1.
    seed_everything(0)
    module = DeiT3Supervised(
        backbone("paper"), pretrained=str(pretrained), num_classes=4, warmup_epochs=0, head_warmup_epochs=0.5
    )
    fit(module, TinyLabelled(), tmp_path, steps=4)
    assert module.head_warmup_steps == 2
    forward = 8 * count_flops_per_image(module.backbone, 32)
    assert forward == 8 * 1_560_960  # by hand, as above
    assert counted_flops == [forward, forward, 3 * forward, 3 * forward]


def test_without_a_warmup_every_step_counts_forward_and_backward(tmp_path, counted_flops):
    seed_everything(0)
    module = DeiT3Supervised(backbone(), num_classes=4, warmup_epochs=0)
    fit(module, TinyLabelled(), tmp_path, steps=2)
    assert counted_flops == [3 * 8 * count_flops_per_image(module.backbone, 32)] * 2
