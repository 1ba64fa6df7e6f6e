"""A specialized model warm-started from vanilla weights computes exactly the vanilla function (DINOv2 and DINOv3)."""

import pytest
import torch

from clsvit_lightning.models import COMPONENTS, VisionTransformer, dinov3_backbone_config, load_pretrained
from clsvit_lightning.models.dinov3_keys import DINOv3Arch, dinov3_state_dict_shapes
from tests.models.dinov3_reference import random_state_dict

OUTPUT_KEYS = ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm")


def build(spec, num_registers):
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_registers=num_registers,
        specialization=spec, layerscale_init=0.3,
    )  # fmt: skip


def trained_vanilla(num_registers):
    """A vanilla model whose weights are far from init (as a real checkpoint would be)."""
    model = build("vanilla", num_registers)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    return model.eval()


SPECS = [f"{c}:all" for c in COMPONENTS] + ["final_norm", "paper", "paper;registers_path:patch"]


@pytest.mark.parametrize("num_registers", [0, 4])
@pytest.mark.parametrize("spec", SPECS)
def test_warm_started_outputs_equal_vanilla_bit_for_bit(spec, num_registers):
    spec = spec.replace("paper", "norm1,ls1,norm2,ls2:all;qkv:0;final_norm")
    vanilla = trained_vanilla(num_registers)
    specialized = build(spec, num_registers).eval()
    report = load_pretrained(specialized, vanilla.state_dict())
    assert report.warm_started  # every prefix twin came from its shared weight
    images = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        expected, got = vanilla.forward_features(images), specialized.forward_features(images)
        layers_expected = vanilla.get_intermediate_layers(images, n=2, return_class_token=True)
        layers_got = specialized.get_intermediate_layers(images, n=2, return_class_token=True)
    for key in OUTPUT_KEYS:
        assert torch.equal(expected[key], got[key]), key
    for (patches_a, cls_a), (patches_b, cls_b) in zip(layers_expected, layers_got, strict=True):
        assert torch.equal(patches_a, patches_b) and torch.equal(cls_a, cls_b)


def test_plain_load_state_dict_also_warm_starts():
    vanilla = trained_vanilla(2)
    specialized = build("paper", 2).eval()
    specialized.load_state_dict(vanilla.state_dict(), strict=True)
    assert torch.equal(specialized.blocks[1].norm1.prefix_weight, vanilla.blocks[1].norm1.weight)
    assert torch.equal(specialized.blocks[0].attn.qkv.prefix_weight, vanilla.blocks[0].attn.qkv.weight)
    assert torch.equal(specialized.norm.prefix_bias, vanilla.norm.bias)


def test_after_warm_start_the_paths_train_apart():
    vanilla = trained_vanilla(0)
    specialized = build("paper", 0).train()
    load_pretrained(specialized, vanilla.state_dict())
    optimizer = torch.optim.SGD(specialized.parameters(), lr=0.1)
    out = specialized.forward_features(torch.randn(2, 3, 32, 32))
    (out["x_norm_clstoken"] * torch.randn(48)).sum().backward()  # a loss on [CLS] only
    optimizer.step()
    norm1 = specialized.blocks[2].norm1
    assert not torch.equal(norm1.prefix_weight, norm1.weight)


def test_a_fresh_specialized_model_starts_as_its_vanilla_twin():
    torch.manual_seed(3)
    specialized = build("paper", 1).eval()
    for module in specialized.modules():
        if getattr(module, "specialized", False) and hasattr(module, "prefix_parameter"):
            for name in module._split:
                assert torch.equal(getattr(module, name), getattr(module, f"prefix_{name}"))


# DINOv3 (RoPE, storage tokens, masked key bias, eps 1e-5; SwiGLU; the untied cls_norm), from its own layout.
DINOV3_ARCHS = {
    "mlp": DINOv3Arch(48, 3, 4, n_storage_tokens=4, patch_size=8),
    "swiglu": DINOv3Arch(48, 3, 4, ffn_ratio=3, ffn_layer="swiglu", n_storage_tokens=4, patch_size=8),
    "untied_norms": DINOv3Arch(48, 3, 4, n_storage_tokens=4, patch_size=8, untie_cls_and_patch_norms=True),
}


@pytest.mark.parametrize(
    ("arch", "spec"),
    # DINOv3's cls_norm normalises the storage tokens with [CLS]: no registers_path:patch with untied norms.
    [(a, s) for a in DINOV3_ARCHS for s in SPECS if not (a == "untied_norms" and "registers_path:patch" in s)],
)
def test_warm_started_from_a_dinov3_checkpoint_outputs_equal_vanilla_bit_for_bit(arch, spec):
    untied = DINOV3_ARCHS[arch].untie_cls_and_patch_norms
    spec = spec.replace("paper", "norm1,ls1,norm2,ls2:all;qkv:0;final_norm")
    if untied and "final_norm" not in spec:
        spec += ";final_norm"
    state = random_state_dict(dinov3_state_dict_shapes(DINOV3_ARCHS[arch]), seed=1)
    config = dinov3_backbone_config(DINOV3_ARCHS[arch], img_size=32)
    vanilla = VisionTransformer(**config).eval()  # with untied norms: the final norm split, as DINOv3's
    load_pretrained(vanilla, state)
    specialized = VisionTransformer(**{**config, "specialization": spec}).eval()
    report = load_pretrained(specialized, state)
    assert report.warm_started or specialized.spec == vanilla.spec  # untied norms: "final_norm" is DINOv3's own
    images = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        expected, got = vanilla.forward_features(images), specialized.forward_features(images)
        layers_expected = vanilla.get_intermediate_layers(images, n=2, return_class_token=True)
        layers_got = specialized.get_intermediate_layers(images, n=2, return_class_token=True)
    for key in OUTPUT_KEYS:
        assert torch.equal(expected[key], got[key]), key
    for (patches_a, cls_a), (patches_b, cls_b) in zip(layers_expected, layers_got, strict=True):
        assert torch.equal(patches_a, patches_b) and torch.equal(cls_a, cls_b)
