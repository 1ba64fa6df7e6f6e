"""``precision="bf16-mixed"``: the pretraining step runs under autocast, with the numerically
delicate parts in fp32: the head's weight normalisation, the teacher's softmax / Sinkhorn-Knopp
and the student's log-softmax (as DINOv2 keeps them; the big matmuls run in bf16)."""

import math

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer, seed_everything
from torch.overrides import TorchFunctionMode

from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining
from tests.tasks.tiny_ssl_data import TinySSLData

NUM_PROTOTYPES, BOTTLENECK = 64, 16


class DtypeLog(TorchFunctionMode):
    """Records ``(op, input shape, output dtype)`` of the ops whose precision matters."""

    WATCHED = {
        F.softmax: "softmax", F.log_softmax: "log_softmax", torch.exp: "exp", F.normalize: "normalize",
        F.linear: "linear",
    }  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[int, ...], torch.dtype]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.WATCHED:
            self.calls.append((self.WATCHED[func], tuple(args[0].shape), out.dtype))
        return out

    def dtypes(self, op: str, shape: tuple[int, ...] | None = None) -> set[torch.dtype]:
        return {dtype for name, s, dtype in self.calls if name == op and (shape is None or s == shape)}


@pytest.mark.parametrize("targets", ["centering", "sinkhorn_knopp"])
def test_bf16_mixed_steps_run_with_losses_and_targets_in_fp32(tmp_path, targets):
    seed_everything(0)
    backbone = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, specialization="paper")
    module = DINOv2Pretraining(
        backbone, num_prototypes=NUM_PROTOTYPES, head_hidden_dim=48, head_bottleneck_dim=BOTTLENECK,
        teacher_targets=targets, warmup_epochs=0, warmup_teacher_temperature_epochs=0, freeze_last_layer_epochs=0,
    )  # fmt: skip
    log, losses = DtypeLog(), []
    original = module.training_step

    def logged_step(batch, batch_idx):
        with log:
            loss = original(batch, batch_idx)
        losses.append(loss)
        return loss

    module.training_step = logged_step
    trainer = Trainer(
        default_root_dir=tmp_path, max_steps=3, accelerator="cpu", devices=1, precision="bf16-mixed", logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(module, TinySSLData(batch_size=4, length=12))

    assert trainer.global_step == 3
    assert all(loss.dtype == torch.float32 and math.isfinite(loss.item()) for loss in losses)
    assert torch.bfloat16 in log.dtypes("linear")  # autocast was on: the matmuls ran in bf16
    # Weight-normalised prototypes: g * v / ||v|| computed from fp32 weights, in fp32.
    assert log.dtypes("normalize", (NUM_PROTOTYPES, BOTTLENECK)) == {torch.float32}
    # Student log-softmax (DINO and iBOT losses) and the teacher's softmax or Sinkhorn exp: fp32 only.
    assert log.dtypes("log_softmax") == {torch.float32}
    teacher_op = "softmax" if targets == "centering" else "exp"
    assert log.dtypes(teacher_op) == {torch.float32}
    # Mixed precision, not bf16 training: the weights (student and EMA teacher) stay fp32.
    assert {p.dtype for p in module.parameters()} == {torch.float32}
