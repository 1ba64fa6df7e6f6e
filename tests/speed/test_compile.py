"""``torch.compile`` of the backbone: same results as eager, same state-dict keys, no graph breaks.

Inductor compiles C++ on CPU, so these tests are the slow ones of the suite (~1 min together): the
models are tiny, and the whole pretraining step is compiled once, in the test named ``slow_``.
"""

import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining
from clsvit_lightning.training.compile import compile_blocks
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


def fit_two_steps(module: DINOv2Pretraining, tmp_path) -> RecordSteps:
    record = RecordSteps()
    trainer = Trainer(
        default_root_dir=tmp_path, max_steps=2, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, callbacks=[record],
    )  # fmt: skip
    seed_everything(1)
    trainer.fit(module, TinySSLData(batch_size=4, length=8))
    return record


def test_slow_compiled_pretraining_steps_match_eager(tmp_path):
    eager, compiled = tiny_module(compile=False), tiny_module(compile=True)
    reference = fit_two_steps(eager, tmp_path / "eager")
    result = fit_two_steps(compiled, tmp_path / "compiled")
    # Student blocks (train mode, with grad) and teacher blocks (eval, no grad) were both compiled.
    for model in (compiled.student, compiled.teacher):
        assert all(block._compiled_call_impl is not None for block in model["backbone"].blocks)
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(reference.losses), rtol=1e-4, atol=1e-5)
    # Gradients, not post-step weights: AdamW's first step is ~lr * sign(grad), which turns rounding
    # noise on near-zero gradients into full-size differences. The sharp teacher softmax amplifies
    # fp32 rounding on the [CLS] path: eager at 1 vs 2 threads already differs by 1.5e-3 of the
    # largest entry, compiled vs eager by up to 1.2e-2 (the backbone alone matches to 1e-4, above).
    assert result.grads.keys() == reference.grads.keys()
    for name, grad in reference.grads.items():
        scale = grad.abs().max().clamp_min(1e-8)
        torch.testing.assert_close(result.grads[name] / scale, grad / scale, rtol=0, atol=3e-2, msg=name)


def traced(fn, *inputs):
    from torch.fx.experimental.proxy_tensor import make_fx

    return make_fx(fn)(*inputs)  # aten-level graph, each node with its value's metadata


def targets(graph_module):
    return [node.target for node in graph_module.graph.nodes if node.op == "call_function"]


def test_unfuse_bias_pass_splits_addmm_before_pointwise_readers_and_saved_outputs():
    from clsvit_lightning.training.compile import unfuse_bias_pass

    aten = torch.ops.aten
    x, w, b = torch.randn(6, 4), torch.randn(4, 5), torch.randn(5)

    def pre_activation_saved(x, w, b):  # a training graph: GELU's input is also kept for the backward
        product = aten.addmm(b, x, w)
        return aten.gelu(product), product

    def read_by_a_matmul(x, w, b):  # not pointwise: the bias stays in the GEMM
        return aten.mm(aten.addmm(b, x, w), w.t())

    def only_returned(x, w, b):  # no reader to fuse the add into
        return aten.addmm(b, x, w)

    graph = traced(pre_activation_saved, x, w, b)
    expected = graph(x, w, b)
    unfuse_bias_pass()(graph.graph)
    graph.recompile()
    assert aten.addmm.default not in targets(graph)
    assert {aten.mm.default, aten.add.Tensor} <= set(targets(graph))
    for got, want in zip(graph(x, w, b), expected, strict=True):
        torch.testing.assert_close(got, want)

    for kept in (read_by_a_matmul, only_returned):
        graph = traced(kept, x, w, b)
        unfuse_bias_pass()(graph.graph)
        assert aten.addmm.default in targets(graph)
