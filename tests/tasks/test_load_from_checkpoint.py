"""Every task's checkpoint rebuilds its backbone: ``Task.load_from_checkpoint(path)`` needs nothing else.

The checkpoint holds ``backbone_config`` (the backbone's ``config``) beside the hyper-parameters;
the pretrained weights file the task started from is not read again (it is deleted here first).
"""

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch.utils.data import DataLoader

from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.tasks.depth import MonocularDepth
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining
from clsvit_lightning.tasks.feature_extraction import FeatureExtraction
from clsvit_lightning.tasks.knn_evaluation import KNNEvaluation
from clsvit_lightning.tasks.linear_probe import LinearProbe
from clsvit_lightning.tasks.segmentation import SemanticSegmentation
from clsvit_lightning.tasks.supervised import DeiT3Supervised
from tests.tasks.tiny_ssl_data import TinySSLData

NUM_CLASSES = 3


def tiny_backbone():
    # Specialized, with a register and no default size: a backbone rebuilt from defaults would not load.
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, num_registers=1, specialization="paper"
    )


class Samples(LightningDataModule):
    """One list of sample dicts behind every loader the tasks ask for."""

    def __init__(self, samples, batch_size=4):
        super().__init__()
        self.samples, self.batch_size, self.num_classes = samples, batch_size, NUM_CLASSES

    def train_dataloader(self):
        return DataLoader(self.samples, batch_size=self.batch_size)

    val_dataloader = predict_dataloader = train_dataloader

    def feature_dataloader(self, split="train"):
        return self.train_dataloader()


def labelled(count=8):
    return Samples([{"image": torch.randn(3, 32, 32), "label": torch.tensor(i % NUM_CLASSES)} for i in range(count)])


def segmentation_scenes(count=8):
    return Samples([{"image": torch.randn(3, 32, 32), "mask": torch.randint(NUM_CLASSES, (32, 32))}] * count)


def depth_scenes(count=8):
    valid = torch.ones(32, 32, dtype=torch.bool)
    return Samples([{"image": torch.randn(3, 32, 32), "depth": 1 + torch.rand(32, 32), "valid": valid}] * count)


def images_to_predict(count=6):
    return Samples([{"image": torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8), "index": i} for i in range(count)])


# name -> (build(backbone, pretrained) -> task, data, how the trainer runs it)
TASKS = {
    "dinov2": (
        lambda backbone, _: DINOv2Pretraining(
            backbone, num_prototypes=64, head_hidden_dim=48, head_bottleneck_dim=16, warmup_epochs=0,
            warmup_teacher_temperature_epochs=0, freeze_last_layer_epochs=0,
        ),
        lambda: TinySSLData(),
        "fit",
    ),
    "supervised": (lambda backbone, _: DeiT3Supervised(backbone, num_classes=NUM_CLASSES), labelled, "fit"),
    "linear_probe": (
        lambda backbone, pretrained: LinearProbe(backbone, pretrained, num_classes=NUM_CLASSES, learning_rates=[1e-3]),
        labelled,
        "fit",
    ),
    "knn": (lambda backbone, pretrained: KNNEvaluation(backbone, pretrained, ks=[2]), labelled, "validate"),
    "segmentation": (
        lambda backbone, pretrained: SemanticSegmentation(
            backbone, NUM_CLASSES, pretrained, warmup_steps=0, inference="whole"
        ),
        segmentation_scenes,
        "fit",
    ),
    "depth": (
        lambda backbone, pretrained: MonocularDepth(backbone, pretrained, warmup_steps=0, num_bins=8, upsample=1),
        depth_scenes,
        "fit",
    ),
    "feature_extraction": (
        lambda backbone, pretrained: FeatureExtraction(backbone, pretrained), images_to_predict, "predict"
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(TASKS))
def test_load_from_checkpoint_rebuilds_the_backbone_from_the_checkpoint_alone(name, tmp_path):
    build, data, stage = TASKS[name]
    pretrained = tmp_path / "backbone.pth"
    weights = tiny_backbone()
    torch.save({"model": weights.state_dict(), "backbone_config": weights.config}, pretrained)
    task = build(tiny_backbone(), str(pretrained))
    trainer = Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=1,
        limit_val_batches=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
    )  # fmt: skip
    if stage == "fit":
        trainer.fit(task, data())
    else:
        getattr(trainer, stage)(task, data())
    path = tmp_path / "task.ckpt"
    trainer.save_checkpoint(path)
    pretrained.unlink()  # the checkpoint's state dict holds the weights: the file is not needed any more

    loaded = type(task).load_from_checkpoint(path)

    saved, rebuilt = task.checkpointed_backbone(), loaded.checkpointed_backbone()
    assert torch.load(path, weights_only=True)["backbone_config"] == saved.config
    assert rebuilt.config == saved.config
    assert any("prefix_" in key for key in rebuilt.state_dict())  # the specialized paths are there
    assert rebuilt.state_dict().keys() == saved.state_dict().keys()
    for key, value in saved.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key
    assert loaded.state_dict().keys() == task.state_dict().keys()
