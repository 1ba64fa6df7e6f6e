"""The fused residual path of ``Block`` (one in-place GEMM per residual branch) against the plain one."""

import pytest
import torch

from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.models.block import Block


def tiny(specialization: str, num_registers: int = 0, **kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, specialization=specialization,
        num_registers=num_registers, layerscale_init=0.5, **kwargs,
    )  # fmt: skip
    with torch.no_grad():  # every parameter away from its init, the prefix twins away from the shared ones
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.double()


def set_fused(model: VisionTransformer, fused: bool) -> None:
    for block in model.blocks:
        block.fused_residual = fused


def outputs_and_grads(model: VisionTransformer, images: torch.Tensor, fused: bool):
    set_fused(model, fused)
    model.zero_grad()
    out = model.forward_features(images)
    loss = out["x_norm_clstoken"].square().sum() + out["x_norm_patchtokens"].pow(3).sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out["x_prenorm"].detach(), grads


@pytest.mark.parametrize(("specialization", "num_registers"), [("vanilla", 0), ("paper", 0), ("paper;mlp:all", 2)])
def test_fused_and_plain_residuals_agree_in_values_and_gradients(specialization, num_registers):
    model = tiny(specialization, num_registers).train()  # drop_path_rate 0: the fused path runs in training
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    fused_out, fused_grads = outputs_and_grads(model, images, True)
    plain_out, plain_grads = outputs_and_grads(model, images, False)
    torch.testing.assert_close(fused_out, plain_out)
    assert fused_grads.keys() == plain_grads.keys() and "blocks.0.ls1.gamma" in plain_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, msg=name)


def test_drop_path_and_autocast_take_the_plain_path():
    model = tiny("paper", drop_path_rate=0.5).train().float()
    images = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    fused = model.forward_features(images)["x_prenorm"]
    set_fused(model, False)
    torch.manual_seed(1)
    torch.testing.assert_close(fused, model.forward_features(images)["x_prenorm"], rtol=0, atol=0)
    set_fused(model, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.eval().forward_features(images)["x_prenorm"].isfinite().all()


def test_in_place_gemms_are_counted_as_flops(monkeypatch):
    model = tiny("paper").float()
    fused = model.flops_per_image()
    monkeypatch.setattr(Block, "fused_residual", False)
    assert model.flops_per_image() == fused > 0


def test_patch_tokens_enter_the_blocks_contiguous():
    model = tiny("vanilla", 1).float()
    prefix, patches = model.prepare_tokens(torch.randn(2, 3, 32, 32))
    assert patches.is_contiguous() and prefix.is_contiguous()


def test_inference_mlp_applies_the_gelu_in_place_with_the_same_outputs(monkeypatch):
    from clsvit_lightning.models import token_ops

    model = tiny("paper;mlp:all", 1).float().eval()
    images = torch.randn(2, 3, 32, 32)
    calls = []
    gelu_ = torch.ops.aten.gelu_
    monkeypatch.setattr(torch.ops.aten, "gelu_", lambda *args, **kwargs: calls.append(1) or gelu_(*args, **kwargs))
    with torch.no_grad():
        in_place = model.forward_features(images)["x_prenorm"]
    assert len(calls) == len(model.blocks)  # the patch group of every block's fc1
    calls.clear()
    with_autograd = model.forward_features(images)["x_prenorm"]  # the out-of-place GELU, which has a backward
    assert not calls
    with_autograd.sum().backward()
    monkeypatch.setattr(token_ops.TokenMlp, "_gelu_in_place_applies", lambda *args: False)
    with torch.no_grad():
        assert torch.equal(in_place, model.forward_features(images)["x_prenorm"])
    assert torch.equal(in_place, with_autograd.detach())


def test_inference_mlp_steps_aside_for_hooks_on_fc1_and_act():
    model = tiny("paper;mlp:all", 1).float().eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model.forward_features(images)["x_prenorm"]
    seen = []
    for block in model.blocks:
        block.mlp.fc1.register_forward_hook(lambda module, args, out: seen.append("fc1"))
        block.mlp.act.register_forward_hook(lambda module, args, out: seen.append("act"))
    with torch.no_grad():
        hooked = model.forward_features(images)["x_prenorm"]
    # Every block's fc1 once, and its GELU on both token groups.
    assert seen.count("fc1") == len(model.blocks) and seen.count("act") == 2 * len(model.blocks)
    assert torch.equal(hooked, reference)


@pytest.mark.parametrize(
    ("part", "kind"),
    [
        ("attn.proj", "forward"), ("mlp.fc2", "forward"), ("ls1", "forward"), ("ls2", "pre"),
        ("attn", "forward"), ("mlp", "forward"),
    ],
)  # fmt: skip
def test_fused_residual_steps_aside_for_hooks_on_the_parts_it_reads(part, kind):
    model = tiny("paper").eval()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    module = model.blocks[0].get_submodule(part)
    seen = []
    if kind == "forward":
        module.register_forward_hook(lambda m, args, output: seen.append(output))
    else:
        module.register_forward_pre_hook(lambda m, args: seen.append(args))
    with torch.no_grad():
        hooked = model.forward_features(images)["x_prenorm"]
        set_fused(model, False)
        plain = model.forward_features(images)["x_prenorm"]
    assert len(seen) == 2  # the hook fired on the default path as on the plain one ...
    for got, expected in zip(*seen, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)  # ... and saw the same tensors
    torch.testing.assert_close(hooked, plain)


def test_a_hook_that_changes_proj_output_takes_effect():
    model = tiny("paper").eval()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        before = model.forward_features(images)["x_prenorm"]
        model.blocks[0].attn.proj.register_forward_hook(lambda m, a, out: tuple(torch.zeros_like(o) for o in out))
        after = model.forward_features(images)["x_prenorm"]
    assert not torch.equal(before, after)
    for gamma in (model.blocks[0].ls1.gamma, model.blocks[0].ls1.prefix_gamma):  # zeroing the branch another way
        gamma.data.zero_()
    model.blocks[0].attn.proj._forward_hooks.clear()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(images)["x_prenorm"], after)


@pytest.mark.parametrize("part", ["attn.proj", "mlp.fc2"])
def test_fused_residual_steps_aside_for_backward_hooks(part):
    model = tiny("paper").train()  # drop_path_rate 0: the fused path also runs in training
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    fired = []
    model.blocks[0].get_submodule(part).register_full_backward_hook(lambda m, gi, go: fired.append(go[1].shape))
    model.forward_features(images)["x_prenorm"].sum().backward()
    assert fired == [(2, 16, 32)]  # the patch group's output gradient, as on the plain path
