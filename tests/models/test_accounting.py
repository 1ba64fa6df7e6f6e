import pytest
import torch

from clsvit_lightning.models import COMPONENTS, VisionTransformer, count_parameters, vit_large, vit_small


def on_meta(factory, **kwargs):
    with torch.device("meta"):
        return factory(**kwargs)


@pytest.mark.parametrize("spec", ["paper", *(f"{c}:all" for c in COMPONENTS), "norm1,qkv,proj,mlp:all;final_norm"])
@pytest.mark.parametrize("num_registers", [0, 4])
def test_specialization_adds_no_flops(spec, num_registers):
    vanilla = on_meta(vit_small, num_registers=num_registers)
    specialized = on_meta(vit_small, num_registers=num_registers, specialization=spec)
    flops_vanilla, flops_specialized = vanilla.flops_per_image(), specialized.flops_per_image()
    assert abs(flops_specialized / flops_vanilla - 1) <= 0.005
    assert flops_specialized == flops_vanilla  # every token goes through exactly one path


def test_registers_on_the_patch_path_cost_at_most_the_tiny_prefix_group_twice():
    vanilla = on_meta(vit_small, num_registers=4)
    routed = on_meta(vit_small, num_registers=4, specialization="paper;registers_path:patch")
    assert 0 <= routed.flops_per_image() / vanilla.flops_per_image() - 1 <= 0.005


def test_flops_match_the_textbook_formula():
    model = VisionTransformer(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=4, num_registers=2)
    dim, tokens, patches, depth = 64, 1 + 2 + 16, 16, 2
    per_block = 2 * tokens * (3 * dim * dim + dim * dim + 2 * 4 * dim * dim) + 2 * 2 * tokens * tokens * dim
    patch_embed = 2 * patches * 3 * 16 * 16 * dim
    assert model.flops_per_image() == depth * per_block + patch_embed
    assert model.flops_per_image(img_size=(32, 64)) < model.flops_per_image()


def test_overhead_of_the_paper_preset_matches_hand_counted_parameters():
    dim, depth = 384, 12
    qkv = 3 * dim * dim + 3 * dim
    extra = 4 * qkv + depth * (2 * 2 * dim + 2 * dim) + 2 * dim  # qkv x 4, norms + ls per block, final norm
    count = on_meta(vit_small, specialization="paper").parameter_count()
    assert count.total - count.unspecialized == extra
    assert count.unspecialized == on_meta(vit_small).parameter_count().total
    assert count.overhead == pytest.approx(0.0832, abs=5e-4)  # the paper reports about +8 %
    large = on_meta(vit_large, patch_size=14, specialization="paper").parameter_count()
    assert large.overhead == pytest.approx(0.0836, abs=5e-4)


def test_count_parameters_of_a_vanilla_model_has_zero_overhead():
    count = count_parameters(VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2))
    assert count.overhead == 0.0 and count.total == count.unspecialized
