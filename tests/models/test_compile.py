"""``torch.compile`` of the backbone: same results as eager, same state-dict keys, no graph breaks.

Inductor compiles C++ on CPU, so these tests are the slow ones of the suite (~1 min together): the
models are tiny, and the whole pretraining step is compiled once, in the test named ``slow_``.
"""

import math

import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.models.compile import compile_blocks
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining
from tests.tasks.tiny_ssl_data import TinySSLData


def tiny_backbone(**kwargs):
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_registers=2, specialization="paper",
        layerscale_init=0.5, **kwargs,
    )  # fmt: skip


def outputs_and_gradients(model, images):
    out = model.forward_features(images)
    loss = (out["x_norm_clstoken"] * torch.arange(32.0)).sum() + out["x_norm_patchtokens"].square().mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out["x_norm_clstoken"].detach(), out["x_norm_patchtokens"].detach(), grads


def test_compiled_blocks_match_eager_outputs_and_gradients_and_keep_the_keys():
    torch.manual_seed(0)
    eager = tiny_backbone().train()
    compiled = tiny_backbone().train()
    compiled.load_state_dict(eager.state_dict())
    assert compile_blocks(compiled) == 2
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no `_orig_mod.` in the keys
    # Two token counts (global-like and local-like crops), as in a pretraining step.
    for size in (32, 16):
        images = torch.randn(4, 3, size, size)
        eager.zero_grad(), compiled.zero_grad()
        reference = outputs_and_gradients(eager, images)
        result = outputs_and_gradients(compiled, images)
        torch.testing.assert_close(result[0], reference[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(result[1], reference[1], rtol=1e-4, atol=1e-5)
        assert result[2].keys() == reference[2].keys()
        for name, grad in reference[2].items():
            torch.testing.assert_close(result[2][name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_compiled_dinov3_blocks_match_eager_with_rope_augmentation():
    """RoPE rotates q and k in place inside each compiled block; training draws each block's rope."""
    torch.manual_seed(0)
    dinov3 = dict(position_encoding="rope", rope_rescale_coords=2.0, mask_k_bias=True, norm_eps=1e-5)
    eager = tiny_backbone(**dinov3, ffn_layer="swiglu", mlp_ratio=3.0).train()
    compiled = tiny_backbone(**dinov3, ffn_layer="swiglu", mlp_ratio=3.0).train()
    compiled.load_state_dict(eager.state_dict())
    compile_blocks(compiled)
    images = torch.randn(4, 3, 32, 48)  # not square
    torch.manual_seed(1)  # the same rope draws in both
    reference = outputs_and_gradients(eager, images)
    torch.manual_seed(1)
    result = outputs_and_gradients(compiled, images)
    for got, expected in zip(result[:2], reference[:2], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    for name, grad in reference[2].items():
        torch.testing.assert_close(result[2][name], grad, rtol=1e-4, atol=1e-5, msg=name)


def tiny_module(compile: bool) -> DINOv2Pretraining:
    seed_everything(0)
    backbone = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, specialization="paper")
    return DINOv2Pretraining(
        backbone, num_prototypes=64, head_hidden_dim=48, head_bottleneck_dim=16, warmup_epochs=0, base_lr=0.01,
        warmup_teacher_temperature_epochs=0, freeze_last_layer_epochs=0, compile=compile,
    )  # fmt: skip


class RecordSteps(Callback):
    """The loss of every step and the gradients of the first one (before clipping)."""

    def __init__(self) -> None:
        self.losses, self.grads = [], None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.grads is None:
            params = pl_module.student.named_parameters()
            self.grads = {name: p.grad.detach().clone() for name, p in params if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def fit_steps(module: DINOv2Pretraining, tmp_path, precision: str = "32-true", steps: int = 2) -> RecordSteps:
    record = RecordSteps()
    trainer = Trainer(
        default_root_dir=tmp_path, max_steps=steps, accelerator="cpu", devices=1, logger=False, precision=precision,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, callbacks=[record],
    )  # fmt: skip
    seed_everything(1)
    trainer.fit(module, TinySSLData(batch_size=4, length=8))
    return record


def test_slow_compiled_pretraining_steps_match_eager(tmp_path):
    """Compiled and eager fp32 steps agree as closely as fp32 rounding lets them, on any CPU.

    The tolerance comes from the computation, not from one machine: a float64 run of the same step
    measures how far eager fp32 rounding moves each value, and the compiled step (other kernels,
    other summation orders) may move it by at most a few times that, plus a few fp32 ulps of the
    value's scale. The sharp teacher softmax makes this step ill-conditioned (eager at 1 vs 2
    threads already differs by 1e-3 of the largest gradient), which the float64 run captures; a
    wrong fusion gives differences of the values' own size.
    """
    eager, compiled = tiny_module(compile=False), tiny_module(compile=True)
    exact = tiny_module(compile=False)
    reference = fit_steps(exact, tmp_path / "float64", precision="64-true")
    eager_record = fit_steps(eager, tmp_path / "eager")
    result = fit_steps(compiled, tmp_path / "compiled")
    # Student blocks (train mode, with grad) and teacher blocks (eval, no grad) were both compiled.
    for model in (compiled.student, compiled.teacher):
        assert all(block._compiled_call_impl is not None for block in model["backbone"].blocks)
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    assert len(result.losses) == 2 and all(math.isfinite(loss) for loss in result.losses)

    def assert_within_fp32_noise(got: torch.Tensor, fp32: torch.Tensor, exact: torch.Tensor, name: str) -> None:
        exact = exact.to(torch.float64)
        eager_error = (fp32.double() - exact).abs().max().item()
        ulps = 64 * torch.finfo(torch.float32).eps * exact.abs().max().item()
        error = (got.double() - exact).abs().max().item()
        assert error <= 8 * eager_error + ulps, f"{name}: compiled off by {error:.3g}, eager fp32 by {eager_error:.3g}"

    # The first step: same weights and batch in all three runs.
    assert_within_fp32_noise(
        torch.tensor(result.losses[:1]), torch.tensor(eager_record.losses[:1]), torch.tensor(reference.losses[:1]),
        "loss of step 1",
    )  # fmt: skip
    assert result.grads.keys() == eager_record.grads.keys() == reference.grads.keys()
    for name, grad in reference.grads.items():
        assert_within_fp32_noise(result.grads[name], eager_record.grads[name], grad, name)
    # The second step starts from AdamW's first update, ~lr * sign(grad): rounding noise on tiny
    # gradients becomes full-size weight differences, and the float64 run measures that too.
    assert_within_fp32_noise(
        torch.tensor(result.losses[1:]), torch.tensor(eager_record.losses[1:]), torch.tensor(reference.losses[1:]),
        "loss of step 2",
    )  # fmt: skip
