import pytest
import torch

from clsvit_lightning.models import (
    COMPONENTS,
    DINOV3_SIZES,
    VisionTransformer,
    count_flops_per_image,
    count_parameters,
    count_training_flops_per_image,
    vit_large,
    vit_small,
)


def on_meta(factory, **kwargs):
    with torch.device("meta"):
        return factory(**kwargs)


@pytest.mark.parametrize("spec", ["paper", *(f"{c}:all" for c in COMPONENTS), "norm1,qkv,proj,mlp:all;final_norm"])
@pytest.mark.parametrize("num_registers", [0, 4])
def test_specialization_adds_no_flops(spec, num_registers):
    vanilla = on_meta(vit_small, num_registers=num_registers)
    specialized = on_meta(vit_small, num_registers=num_registers, specialization=spec)
    flops_vanilla, flops_specialized = count_flops_per_image(vanilla), count_flops_per_image(specialized)
    assert abs(flops_specialized / flops_vanilla - 1) <= 0.005
    assert flops_specialized == flops_vanilla  # every token goes through exactly one path


def test_registers_on_the_patch_path_cost_at_most_the_tiny_prefix_group_twice():
    vanilla = on_meta(vit_small, num_registers=4)
    routed = on_meta(vit_small, num_registers=4, specialization="paper;registers_path:patch")
    assert 0 <= count_flops_per_image(routed) / count_flops_per_image(vanilla) - 1 <= 0.005


def test_flops_match_the_textbook_formula():
    model = VisionTransformer(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=4, num_registers=2)
    dim, tokens, patches, depth = 64, 1 + 2 + 16, 16, 2
    per_block = 2 * tokens * (3 * dim * dim + dim * dim + 2 * 4 * dim * dim) + 2 * 2 * tokens * tokens * dim
    patch_embed = 2 * patches * 3 * 16 * 16 * dim
    assert count_flops_per_image(model) == depth * per_block + patch_embed
    assert count_flops_per_image(model, img_size=(32, 64)) < count_flops_per_image(model)


def test_overhead_of_the_paper_preset_matches_hand_counted_parameters():
    dim, depth = 384, 12
    qkv = 3 * dim * dim + 3 * dim
    extra = 4 * qkv + depth * (2 * 2 * dim + 2 * dim) + 2 * dim  # qkv x 4, norms + ls per block, final norm
    count = count_parameters(on_meta(vit_small, specialization="paper"))
    assert count.total - count.unspecialized == extra
    assert count.unspecialized == count_parameters(on_meta(vit_small)).total
    assert count.overhead == pytest.approx(0.0832, abs=5e-4)  # the paper reports about +8 %
    large = count_parameters(on_meta(vit_large, patch_size=14, specialization="paper"))
    assert large.overhead == pytest.approx(0.0836, abs=5e-4)


def test_count_parameters_of_a_vanilla_model_has_zero_overhead():
    count = count_parameters(VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2))
    assert count.overhead == 0.0 and count.total == count.unspecialized


def test_training_flops_count_only_the_samples_that_batch_subset_stochastic_depth_keeps():
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, drop_path_rate=0.5)
    forward = count_flops_per_image(model)
    embed = 2 * 16 * (3 * 8 * 8) * 32  # the patch convolution runs on every image
    # Batch 4 at rate 0.5: each block's branches run on 2 of the 4 images.
    assert count_training_flops_per_image(model, batch_size=4) == embed + (forward - embed) / 2
    assert count_training_flops_per_image(model, batch_size=1) == forward  # at batch 1 the branch always runs


def test_swiglu_flops_match_the_textbook_formula_and_rope_adds_no_counted_flops():
    # DINOv3 layout: 4 storage tokens, SwiGLU of hidden 2/3 * 3 * 64 = 128 (three matmuls), RoPE.
    config = dict(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=4, num_registers=4, mlp_ratio=3.0)
    swiglu = VisionTransformer(**config, ffn_layer="swiglu", position_encoding="rope", mask_k_bias=True)
    dim, hidden, tokens, patches = 64, 128, 1 + 4 + 16, 16
    per_block = 2 * tokens * (3 * dim * dim + dim * dim + 3 * dim * hidden) + 2 * 2 * tokens * tokens * dim
    assert count_flops_per_image(swiglu) == 2 * per_block + 2 * patches * 3 * 16 * 16 * dim
    # The rotation of q and k is element-wise (like norms and activations): RoPE and a learned
    # position embedding count the same.
    rope = VisionTransformer(**config, position_encoding="rope")
    assert count_flops_per_image(rope) == count_flops_per_image(VisionTransformer(**config))
    assert count_flops_per_image(rope, img_size=(32, 96)) > count_flops_per_image(rope, img_size=(32, 64))


@pytest.mark.parametrize(
    ("name", "overhead"),
    [("dinov3_vits16", 0.0834), ("dinov3_vits16plus", 0.0628), ("dinov3_vitl16", 0.0836), ("dinov3_vit7b16", 0.0976)],
)
def test_paper_overhead_of_dinov3_sizes(name, overhead):
    vanilla, paper = on_meta(DINOV3_SIZES[name]), on_meta(DINOV3_SIZES[name], specialization="paper")
    assert count_parameters(paper).overhead == pytest.approx(overhead, abs=5e-5)
    assert count_parameters(paper).unspecialized == count_parameters(vanilla).total
    assert count_flops_per_image(paper) == count_flops_per_image(vanilla)
