"""Real Lightning checkpoints of every task, written without training (Lightning's own ``save_checkpoint``).

Each task's backbone (both networks of a pretraining task) gets random parameters first, so a
backbone read back from the checkpoint can only match if it came from there. Lightning is imported
here only: the code under test must not need it.
"""

import torch
from lightning.pytorch import Trainer

from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.tasks.depth import MonocularDepth
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining
from clsvit_lightning.tasks.feature_extraction import FeatureExtraction
from clsvit_lightning.tasks.knn_evaluation import KNNEvaluation
from clsvit_lightning.tasks.linear_probe import LinearProbe
from clsvit_lightning.tasks.segmentation import SemanticSegmentation
from clsvit_lightning.tasks.supervised import DeiT3Supervised
from tests.interop.backbones import randomize


def task_backbone(specialization="paper"):
    # Specialized, 2 heads of 32 channels and a register: nothing a reader could guess from the shapes.
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=2, num_registers=1, specialization=specialization
    )


TASKS = {
    "dinov2": lambda b, w: DINOv2Pretraining(b, num_prototypes=16, head_hidden_dim=32, head_bottleneck_dim=8),
    "supervised": lambda b, w: DeiT3Supervised(b, num_classes=3),
    "knn": lambda b, w: KNNEvaluation(b, w),
    "linear_probe": lambda b, w: LinearProbe(b, w, num_classes=3, n_last_blocks_options=(1,)),
    "segmentation": lambda b, w: SemanticSegmentation(b, 3, w),
    "depth": lambda b, w: MonocularDepth(b, w),
    "feature_extraction": lambda b, w: FeatureExtraction(b, w),
}


def write_task_checkpoint(name, path, specialization="paper", seed=0):
    """Write task ``name``'s checkpoint to ``path``; returns the task (its backbones hold the weights).

    ``seed`` draws the backbones' parameters: checkpoints of different seeds hold different weights.
    """
    weights = path.with_suffix(".weights.pth")  # the `pretrained` file of the evaluation tasks
    source = randomize(task_backbone(specialization), seed=1)
    torch.save({"model": source.state_dict(), "backbone_config": source.config}, weights)
    task = TASKS[name](task_backbone(specialization), str(weights))
    backbones = [task.teacher["backbone"], task.student["backbone"]] if name == "dinov2" else [backbone_of(task)]
    for index, backbone in enumerate(backbones):
        randomize(backbone, 10 * seed + 2 + index)
    trainer = Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    return task


def backbone_of(task, which="teacher"):
    if isinstance(task, DINOv2Pretraining):
        return task.teacher["backbone"] if which == "teacher" else task.student["backbone"]
    return task.backbone
