"""The specialized layers: one set of parameters for both token groups, or a prefix path beside the patch path."""

import torch
import torch.nn.functional as F

from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.models.specialized_layers import LayerScale, TokenLayerNorm, TokenLinear, TokenMlp, drop_path


def pair(dim=8, prefix_tokens=3, patch_tokens=5, batch=2):
    return torch.randn(batch, prefix_tokens, dim), torch.randn(batch, patch_tokens, dim)


def perturb_prefix(module):
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.startswith("prefix_"):
                parameter.add_(torch.randn_like(parameter))
    return module


def test_shared_ops_apply_one_set_of_parameters_to_both_groups():
    prefix, patches = pair()
    norm, linear, scale = TokenLayerNorm(8), TokenLinear(8, 4), LayerScale(8, 0.5)
    for op, reference in [
        (norm, lambda t: F.layer_norm(t, (8,), norm.weight, norm.bias, 1e-6)),
        (linear, lambda t: F.linear(t, linear.weight, linear.bias)),
        (scale, lambda t: t * 0.5),
    ]:
        out_prefix, out_patches = op(prefix, patches)
        torch.testing.assert_close(out_prefix, reference(prefix))
        torch.testing.assert_close(out_patches, reference(patches))
        assert not any(name.startswith("prefix_") for name, _ in op.named_parameters())


def test_specialized_ops_use_prefix_parameters_for_the_prefix_group_only():
    prefix, patches = pair()
    norm = perturb_prefix(TokenLayerNorm(8, specialized=True))
    out_prefix, out_patches = norm(prefix, patches)
    torch.testing.assert_close(out_prefix, F.layer_norm(prefix, (8,), norm.prefix_weight, norm.prefix_bias, 1e-6))
    torch.testing.assert_close(out_patches, F.layer_norm(patches, (8,), norm.weight, norm.bias, 1e-6))
    linear = perturb_prefix(TokenLinear(8, 4, specialized=True))
    out_prefix, out_patches = linear(prefix, patches)
    torch.testing.assert_close(out_prefix, prefix @ linear.prefix_weight.T + linear.prefix_bias)
    torch.testing.assert_close(out_patches, patches @ linear.weight.T + linear.bias)
    scale = perturb_prefix(LayerScale(8, 0.5, specialized=True))
    out_prefix, out_patches = scale(prefix, patches)
    torch.testing.assert_close(out_prefix, prefix * scale.prefix_gamma)
    torch.testing.assert_close(out_patches, patches * 0.5)


def test_registers_routed_to_the_patch_path_use_the_shared_parameters():
    prefix, patches = pair(prefix_tokens=3)  # [CLS, 2 registers]
    linear = perturb_prefix(TokenLinear(8, 4, specialized=True, prefix_path_tokens=1))
    out_prefix, _ = linear(prefix, patches)
    torch.testing.assert_close(out_prefix[:, :1], prefix[:, :1] @ linear.prefix_weight.T + linear.prefix_bias)
    torch.testing.assert_close(out_prefix[:, 1:], prefix[:, 1:] @ linear.weight.T + linear.bias)


def test_specialized_mlp_splits_both_linears():
    mlp = TokenMlp(8, 16, specialized=True)
    names = {name for name, _ in mlp.named_parameters()}
    assert {"fc1.prefix_weight", "fc1.prefix_bias", "fc2.prefix_weight", "fc2.prefix_bias"} <= names
    perturb_prefix(mlp.fc1)
    prefix, patches = pair()
    out_prefix, out_patches = mlp(prefix, patches)
    expected = F.linear(
        F.gelu(F.linear(prefix, mlp.fc1.prefix_weight, mlp.fc1.prefix_bias)), mlp.fc2.prefix_weight, mlp.fc2.prefix_bias
    )
    torch.testing.assert_close(out_prefix, expected)


def test_vanilla_state_dict_fills_the_prefix_twins_on_load():
    shared = TokenLayerNorm(8)
    with torch.no_grad():
        shared.weight.normal_()
    specialized = TokenLayerNorm(8, specialized=True)
    specialized.load_state_dict(shared.state_dict(), strict=True)
    assert torch.equal(specialized.prefix_weight, shared.weight)
    assert torch.equal(specialized.prefix_bias, shared.bias)


def test_warm_start_with_assign_gives_the_twins_their_own_storage():
    shared = TokenLayerNorm(8)
    with torch.device("meta"):
        specialized = TokenLayerNorm(8, specialized=True)
    specialized.load_state_dict(shared.state_dict(), strict=True, assign=True)
    assert torch.equal(specialized.prefix_weight, specialized.weight)
    before = specialized.weight.detach().clone()
    with torch.no_grad():
        specialized.prefix_weight.add_(1.0)
    assert torch.equal(specialized.weight, before)  # training one path leaves the other alone


def test_no_weight_decay_is_declared_by_module_type():
    assert TokenLinear.no_weight_decay == {"bias", "prefix_bias"}
    assert {"weight", "bias", "prefix_weight", "prefix_bias"} == TokenLayerNorm.no_weight_decay
    assert {"gamma", "prefix_gamma"} == LayerScale.no_weight_decay


def test_drop_path_keeps_expectation_and_is_identity_in_eval():
    prefix, patches = torch.ones(4000, 1, 2), torch.ones(4000, 3, 2)
    out_prefix, out_patches = drop_path(prefix, patches, rate=0.25, training=True)
    assert set(out_prefix.unique().tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}
    assert abs(out_patches.mean().item() - 1.0) < 0.05
    assert torch.equal(out_prefix[:, 0, 0], out_patches[:, 0, 0])  # same samples dropped in both groups
    assert drop_path(prefix, patches, rate=0.25, training=False) == (prefix, patches)


def tiny_mlp_model() -> VisionTransformer:
    """A model whose every MLP is specialized, its parameters away from their init."""
    model = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, specialization="paper;mlp:all",
        num_registers=1, layerscale_init=0.5,
    )  # fmt: skip
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()


def test_inference_mlp_applies_the_gelu_in_place_with_the_same_outputs(monkeypatch):
    model = tiny_mlp_model()
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
    monkeypatch.setattr(TokenMlp, "_gelu_in_place_applies", lambda *args: False)
    with torch.no_grad():
        assert torch.equal(in_place, model.forward_features(images)["x_prenorm"])
    assert torch.equal(in_place, with_autograd.detach())


def test_inference_mlp_steps_aside_for_hooks_on_fc1_and_act():
    model = tiny_mlp_model()
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
