"""transformers' DINOv3 (``DINOv3ViTModel``) -> this backbone, checked against transformers itself.

Random weights on tiny configurations, nothing downloaded. transformers rotates by ``coord * (1 /
period)`` where DINOv3 (and this backbone) compute ``coord / period``, and runs its own attention
kernel: the features agree to float rounding (fp32 eps 1.2e-7, two layers), within 1e-5.
"""

import pytest
import torch

from clsvit_lightning.models import VisionTransformer, from_pretrained, load_pretrained
from tests.interop.backbones import features, randomize

transformers = pytest.importorskip("transformers")

IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
TOLERANCE = dict(atol=1e-5, rtol=0)


def hf_model(**config):
    """A random transformers DINOv3 of 2 layers, 64 wide (4 heads of 16), on 8 px patches."""
    arguments = dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, patch_size=8,
        image_size=32, num_register_tokens=4, layer_norm_eps=1e-5,
    )  # fmt: skip
    return randomize(transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(**{**arguments, **config})))


def hf_features(model, images=IMAGES):
    """``last_hidden_state``: [CLS], registers, patches after the final norm."""
    with torch.no_grad():
        return model(pixel_values=images).last_hidden_state


VARIANTS = {
    "mlp": {},
    "swiglu": dict(use_gated_mlp=True, hidden_act="silu", intermediate_size=128),
    "no_registers_no_qkv_bias": dict(num_register_tokens=0, query_bias=False, value_bias=False),
    "key_bias": dict(key_bias=True),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_transformers_folder_loads_with_its_architecture_and_features(tmp_path, variant):
    theirs = hf_model(**VARIANTS[variant])
    theirs.save_pretrained(tmp_path / "hf")
    ours = from_pretrained(tmp_path / "hf")
    config = ours.config
    assert not ours.training and config["position_encoding"] == "rope" and config["num_heads"] == 4
    assert config["ffn_layer"] == ("swiglu" if variant == "swiglu" else "mlp")
    assert config["mask_k_bias"] == (variant in ("mlp", "swiglu"))
    for images in (IMAGES, torch.randn(1, 3, 40, 24), torch.randn(2, 3, 16, 56)):  # native grid, non-square
        torch.testing.assert_close(features(ours, images), hf_features(theirs, images), **TOLERANCE)
    # The same weights through load_pretrained (a model you build), the weights file alone, and
    # transformers 5's in-memory names (model.layer.{i}).
    for weights in (tmp_path / "hf", tmp_path / "hf" / "model.safetensors", theirs.state_dict()):
        built = VisionTransformer(**config).eval()
        load_pretrained(built, weights)
        assert torch.equal(features(built, IMAGES), features(ours, IMAGES))


def test_the_folder_config_gives_the_rope_periods(tmp_path):
    theirs = hf_model(rope_theta=10.0)
    theirs.save_pretrained(tmp_path / "hf")
    ours = from_pretrained(tmp_path / "hf")
    assert ours.config["rope_base"] == 10.0
    torch.testing.assert_close(features(ours, IMAGES), hf_features(theirs), **TOLERANCE)
    with pytest.raises(ValueError, match="RoPE periods"):  # a model built with DINOv3's base 100
        load_pretrained(VisionTransformer(**{**ours.config, "rope_base": 100.0}), tmp_path / "hf")


def test_a_specialized_model_warm_started_from_transformers_weights_computes_the_vanilla_function(tmp_path):
    theirs = hf_model(use_gated_mlp=True, hidden_act="silu", intermediate_size=128)
    theirs.save_pretrained(tmp_path / "hf")
    vanilla = from_pretrained(tmp_path / "hf")
    specialized = from_pretrained(tmp_path / "hf", specialization="paper")
    assert specialized.load_report.warm_started
    assert torch.equal(features(specialized, IMAGES), features(vanilla, IMAGES))
    torch.testing.assert_close(features(specialized, IMAGES), hf_features(theirs), **TOLERANCE)


def test_transformers_dinov3_weights_into_a_dinov2_model_are_refused_with_the_reason(tmp_path):
    theirs = hf_model()
    dinov2 = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_registers=4)
    with pytest.raises(ValueError, match="this is a DINOv3 checkpoint"):
        load_pretrained(dinov2, theirs.state_dict())


def test_a_gelu_swiglu_is_refused(tmp_path):
    theirs = hf_model(use_gated_mlp=True, intermediate_size=128)  # hidden_act stays gelu
    theirs.save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match="hidden_act='gelu' with use_gated_mlp=True"):
        from_pretrained(tmp_path / "hf")
