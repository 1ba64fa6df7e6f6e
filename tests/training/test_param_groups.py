import pytest
import torch

from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.models.dino_head import DINOHead
from clsvit_lightning.training.param_groups import build_param_groups, parameter_roles


@pytest.fixture
def modules():
    backbone = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_registers=2, specialization="paper"
    )
    return {"backbone": backbone, "dino_head": DINOHead(32, 64, hidden_dim=48, bottleneck_dim=16)}


def test_no_weight_decay_on_biases_norms_and_layerscale_decided_by_module_type(modules):
    roles = parameter_roles(modules)
    no_decay = {name for name, (_, role) in roles.items() if role.wd_multiplier == 0.0}
    expected = {
        name
        for name in roles
        if name.endswith(("bias", "gamma")) or ".norm" in name or name.startswith("backbone.norm.")
    }
    assert no_decay == expected
    for name in ("backbone.cls_token", "backbone.pos_embed", "backbone.blocks.0.attn.qkv.prefix_weight"):
        assert roles[name][1].wd_multiplier == 1.0  # DINOv2 decays tokens and weights


@pytest.mark.parametrize("norm", [torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm])
def test_a_dense_head_decays_the_same_whether_or_not_its_batchnorm_is_synced(norm):
    # Lightning swaps BatchNorm for SyncBatchNorm under DDP (`sync_batchnorm`) before the optimizer
    # is built: one GPU and many must give the same groups.
    head = torch.nn.Sequential(norm(8), torch.nn.Conv2d(8, 4, 1))
    roles = parameter_roles({"head": head})
    decayed = {name for name, (_, role) in roles.items() if role.wd_multiplier == 1.0}
    assert decayed == {"head.1.weight"}


def test_layerwise_lr_decay_and_patch_embed_multiplier(modules):
    roles = parameter_roles(modules, layerwise_decay=0.5, patch_embed_lr_multiplier=0.2)
    depth = 3
    assert roles["backbone.cls_token"][1].lr_multiplier == pytest.approx(0.5 ** (depth + 1))
    assert roles["backbone.register_tokens"][1].lr_multiplier == pytest.approx(0.5**4)
    assert roles["backbone.patch_embed.proj.weight"][1].lr_multiplier == pytest.approx(0.5**4 * 0.2)
    assert roles["backbone.blocks.0.norm1.prefix_weight"][1].lr_multiplier == pytest.approx(0.5**3)
    assert roles["backbone.blocks.2.mlp.fc2.weight"][1].lr_multiplier == pytest.approx(0.5)
    assert roles["backbone.norm.weight"][1].lr_multiplier == 1.0
    assert roles["dino_head.mlp.0.weight"][1].lr_multiplier == 1.0


def test_only_the_prototype_layer_is_the_last_layer(modules):
    roles = parameter_roles(modules)
    last = {name for name, (_, role) in roles.items() if role.is_last_layer}
    assert last == {"dino_head.last_layer.weight_g", "dino_head.last_layer.weight_v"}


def test_groups_fuse_equal_roles_and_cover_every_parameter_once(modules):
    groups = build_param_groups(modules, layerwise_decay=0.9, patch_embed_lr_multiplier=0.2)
    seen = [id(p) for g in groups for p in g["params"]]
    all_params = [id(p) for m in modules.values() for p in m.parameters()]
    assert sorted(seen) == sorted(all_params)
    keys = [(g["lr_multiplier"], g["wd_multiplier"], g["is_last_layer"]) for g in groups]
    assert len(keys) == len(set(keys))
    torch.optim.AdamW(groups)  # extra keys are accepted by the optimizer


def test_frozen_parameters_are_left_out(modules):
    modules["backbone"].patch_embed.requires_grad_(False)
    names = {n for g in build_param_groups(modules) for n in g["names"]}
    assert "backbone.patch_embed.proj.weight" not in names
