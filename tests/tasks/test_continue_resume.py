"""A continued run (released-style vanilla weights, fresh heads, a head warm-up) resumes bit-identical.

The same check as tests/tasks/test_exact_resume.py (real loaders on the synthetic scenes, killed
after step ``k`` and resumed from ``last.ckpt``, compared tensor by tensor and loss by loss), with
the kill inside the head warm-up and after it.
"""

import pytest
import torch

from clsvit_lightning.data.datamodules.imagenet import ImageNetDataModule
from clsvit_lightning.data.synthetic.writers import write_synthetic
from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining
from clsvit_lightning.tasks.supervised import DeiT3Supervised
from tests.tasks.test_exact_resume import (
    EPOCHS,
    STEPS_PER_EPOCH,
    assert_same_state,
    backbone,
    fit_run,
)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, num_train=24, num_val=8, num_classes=4, size_range=(40, 56), seed=3)
    return out


@pytest.fixture(scope="module")
def vanilla_weights(tmp_path_factory):
    """A trained-looking vanilla backbone file without heads, as a released model is."""
    torch.manual_seed(1)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    path = tmp_path_factory.mktemp("release") / "backbone.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


def continued(task: str, root, pretrained, num_workers: int):
    """One epoch (3 steps) of head warm-up, then the recipe, from vanilla weights into a `paper` backbone."""
    workers = {"num_workers": num_workers, "persistent_workers": num_workers > 0, "pin_memory": False}
    if task == "dinov2":
        model = DINOv2Pretraining(
            backbone(), pretrained=str(pretrained), num_prototypes=64, head_hidden_dim=48, head_bottleneck_dim=16,
            warmup_epochs=0.5, base_lr=0.01, warmup_teacher_temperature_epochs=0, freeze_last_layer_epochs=0,
            head_warmup_epochs=1, teacher_momentum=0.999,
        )  # fmt: skip
        data = ImageNetDataModule(
            str(root / "imagenet"), batch_size=8, crop_size=32, resize_size=36, local_crop_size=16,
            num_local_crops=2, patch_size=8, **workers,
        )  # fmt: skip
    else:
        model = DeiT3Supervised(
            backbone(), pretrained=str(pretrained), num_classes=4, warmup_epochs=0.5, base_lr=3e-3, head_warmup_epochs=1
        )
        data = ImageNetDataModule(
            str(root / "imagenet"), mode="supervised", batch_size=8, crop_size=32, resize_size=36, **workers
        )
    return model, data


def run(folder, root, pretrained, task, num_workers, kill_after=None, resume=False):
    return fit_run(folder, lambda: continued(task, root, pretrained, num_workers), kill_after, resume)


CASES = [("dinov2", 0, 2), ("dinov2", 2, 4), ("dinov2", 0, 3), ("deit3", 0, 2)]


@pytest.mark.parametrize(
    "task, num_workers, kill_after", CASES,
    ids=[f"{t}-{w}workers-after_step_{k}{'-in_warmup' if k < STEPS_PER_EPOCH else ''}" for t, w, k in CASES],
)  # fmt: skip
def test_killed_and_resumed_continuation_is_bit_identical(
    tmp_path, synthetic_root, vanilla_weights, task, num_workers, kill_after
):
    _, reference, reference_losses = run(tmp_path / "reference", synthetic_root, vanilla_weights, task, num_workers)
    assert reference.lightning_module.head_warmup_steps == STEPS_PER_EPOCH
    assert reference.global_step == STEPS_PER_EPOCH * EPOCHS
    args = (synthetic_root, vanilla_weights, task, num_workers)
    _, killed, first_losses = run(tmp_path / "run", *args, kill_after=kill_after)
    assert killed.global_step == kill_after
    _, resumed, resumed_losses = run(tmp_path / "run", *args, resume=True)
    assert {**first_losses, **resumed_losses} == reference_losses
    assert min(resumed_losses) == kill_after + 1  # no step replayed, none skipped
    assert_same_state(reference, resumed)
