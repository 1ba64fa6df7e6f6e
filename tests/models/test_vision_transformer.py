import pytest
import torch
import torch.nn.functional as F

from clsvit_lightning.models import VisionTransformer, vit_base, vit_giant, vit_large, vit_small, vit_tiny
from clsvit_lightning.models.specialized_layers import LayerScale
from tests.models.reference_vit import reference_forward


def tiny(**kwargs):
    defaults = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, layerscale_init=0.5)
    return VisionTransformer(**{**defaults, **kwargs})


def randomize(model):
    """Give every parameter a distinct random value so that swapped parameters would show."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("num_registers", [0, 2])
@pytest.mark.parametrize("spec", ["vanilla", "paper", "norm1,qkv,proj,mlp:all;final_norm"])
def test_forward_matches_an_independent_single_sequence_reference(spec, num_registers):
    model = randomize(tiny(specialization=spec, num_registers=num_registers))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.forward_features(images)
    normed, prenorm = reference_forward(model.state_dict(), images, patch_size=8, num_heads=3, depth=3)
    R = num_registers
    torch.testing.assert_close(out["x_norm_clstoken"].double(), normed[:, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["x_norm_regtokens"].double(), normed[:, 1 : 1 + R], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["x_norm_patchtokens"].double(), normed[:, 1 + R :], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["x_prenorm"].double(), prenorm, rtol=1e-4, atol=1e-4)


def test_registers_can_follow_the_patch_path():
    model = randomize(tiny(specialization="norm1,qkv:all;final_norm;registers_path:patch", num_registers=2))
    assert model.num_prefix_tokens == 3 and model.num_prefix_path_tokens == 1
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.forward_features(images)
    normed, _ = reference_forward(model.state_dict(), images, patch_size=8, num_heads=3, depth=3, prefix_rows=1)
    torch.testing.assert_close(out["x_norm_regtokens"].double(), normed[:, 1:3], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["x_norm_patchtokens"].double(), normed[:, 3:], rtol=1e-4, atol=1e-4)


def test_output_shapes_and_forward_returns_the_normed_cls():
    model = tiny(num_registers=4).eval()
    images = torch.randn(2, 3, 32, 48)
    out = model.forward_features(images)
    assert out["x_norm_clstoken"].shape == (2, 48)
    assert out["x_norm_regtokens"].shape == (2, 4, 48)
    assert out["x_norm_patchtokens"].shape == (2, 4 * 6, 48)
    assert out["x_prenorm"].shape == (2, 1 + 4 + 24, 48)
    assert out["masks"] is None
    torch.testing.assert_close(model(images), out["x_norm_clstoken"])


def test_pos_embed_interpolation_is_bicubic_with_dinov2_offset():
    model = tiny(img_size=32, interpolate_offset=0.1)  # 4x4 grid stored
    pos = model.interpolate_pos_encoding(6, 8, torch.float32)
    assert pos.shape == (1, 1 + 48, 48)
    grid = model.pos_embed[:, 1:].reshape(1, 4, 4, 48).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, scale_factor=(6.1 / 4, 8.1 / 4), mode="bicubic").permute(0, 2, 3, 1)
    torch.testing.assert_close(pos[:, 1:], expected.reshape(1, 48, 48))
    torch.testing.assert_close(pos[:, :1], model.pos_embed[:, :1])
    assert model.interpolate_pos_encoding(4, 4, torch.float32) is not None
    exact = tiny(interpolate_offset=0.0).interpolate_pos_encoding(4, 4, torch.float32)
    assert exact.shape == (1, 17, 48)


@pytest.mark.parametrize("img_size", [32, 48])  # the stored grid, and an interpolated one
def test_under_autocast_both_token_groups_enter_the_blocks_in_fp32(img_size):
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_registers=2)
    images = torch.randn(2, 3, img_size, img_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prefix, patches = model.prepare_tokens(images)
        embedded = model.patch_embed(images)
    assert embedded.dtype == torch.bfloat16  # the conv runs in bf16 ...
    assert prefix.dtype == patches.dtype == torch.float32  # ... the residual stream does not (DINOv2)
    pos = model.interpolate_pos_encoding(img_size // 8, img_size // 8, torch.float32)
    torch.testing.assert_close(patches, embedded.float() + pos[:, 1:], rtol=0, atol=0)


def test_registers_get_no_positional_embedding():
    model = tiny(num_registers=2).eval()
    prefix, _ = model.prepare_tokens(torch.randn(1, 3, 32, 32))
    torch.testing.assert_close(prefix[0, 1:], model.register_tokens[0])
    torch.testing.assert_close(prefix[0, 0], (model.cls_token + model.pos_embed[:, :1])[0, 0])


def test_mask_token_replaces_masked_patches_before_the_pos_embed():
    model = tiny().eval()
    with torch.no_grad():
        model.mask_token.fill_(3.0)
    images = torch.randn(2, 3, 32, 32)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[0, 5] = True
    _, patches = model.prepare_tokens(images, masks)
    _, unmasked = model.prepare_tokens(images)
    torch.testing.assert_close(patches[0, 5], 3.0 + model.pos_embed[0, 1 + 5])
    torch.testing.assert_close(patches[1], unmasked[1])
    assert model.forward_features(images, masks)["masks"] is masks
    with pytest.raises(ValueError, match=r"masks must have shape \(2, 16\)"):
        model.prepare_tokens(images, masks[:, :4])


def test_get_intermediate_layers_like_dinov2():
    model = randomize(tiny(depth=4, num_registers=1, specialization="paper"))
    images = torch.randn(2, 3, 32, 32)
    last = model.get_intermediate_layers(images, n=1)
    out = model.forward_features(images)
    torch.testing.assert_close(last[0], out["x_norm_patchtokens"])
    four = model.get_intermediate_layers(images, n=4, reshape=True, return_class_token=True)
    assert len(four) == 4 and four[0][0].shape == (2, 48, 4, 4) and four[0][1].shape == (2, 48)
    torch.testing.assert_close(four[-1][1], out["x_norm_clstoken"])
    torch.testing.assert_close(four[-1][0].flatten(2).transpose(1, 2), out["x_norm_patchtokens"])
    picked = model.get_intermediate_layers(images, n=[0, 2], norm=False)
    assert len(picked) == 2
    with pytest.raises(ValueError, match="not in 0..3"):
        model.get_intermediate_layers(images, n=[4])


def test_stochastic_depth_drops_whole_samples_in_both_token_groups():
    model = tiny(drop_path_rate=0.5, depth=1).train()
    block = model.blocks[0]
    prefix, patches = torch.randn(64, 1, 48), torch.randn(64, 16, 48)
    branch = (torch.ones_like(prefix), torch.ones_like(patches))
    torch.manual_seed(1)
    new_prefix, new_patches = block._add_residual(prefix, patches, branch)
    dropped_prefix = (new_prefix - prefix).abs().amax(dim=(1, 2)) == 0
    dropped_patches = (new_patches - patches).abs().amax(dim=(1, 2)) == 0
    assert torch.equal(dropped_prefix, dropped_patches)
    assert 10 < dropped_prefix.sum() < 54
    kept = ~dropped_prefix
    torch.testing.assert_close(new_patches[kept] - patches[kept], torch.full_like(patches[kept], 2.0))
    model.eval()
    out = block._add_residual(prefix, patches, branch)
    torch.testing.assert_close(out[1], patches + 1)


@pytest.mark.parametrize("branch_name", ["_attention_branch", "_mlp_branch"])
def test_dinov2_stochastic_depth_runs_each_branch_on_a_batch_subset(branch_name):
    model = randomize(tiny(drop_path_rate=0.4, depth=1, num_registers=2, specialization="paper")).train()
    block = model.blocks[0]
    assert block.batch_subset  # DINOv2's training path: drop_add_residual_stochastic_depth
    prefix, patches = torch.randn(10, 3, 48), torch.randn(10, 16, 48)
    branch = getattr(block, branch_name)
    seen = []
    handle = block.norm1.register_forward_hook(lambda m, a, out: seen.append(out[1].shape[0]))
    torch.manual_seed(3)
    out_prefix, out_patches = block._subset_residual(prefix, patches, branch)
    handle.remove()
    loss = lambda p, x: p.sin().sum() + x.square().sum()  # noqa: E731
    grads = torch.autograd.grad(loss(out_prefix, out_patches), list(block.parameters()), allow_unused=True)
    # By hand: 6 of 10 samples (int(10 * 0.6)), drawn by randperm, get the branch scaled by 10 / 6.
    torch.manual_seed(3)
    subset = torch.randperm(10)[:6]
    branch_prefix, branch_patches = branch(prefix, patches)  # per sample: the same values on the subset
    keep = torch.zeros(10, 1, 1).index_fill_(0, subset, 10 / 6)
    expected_prefix, expected_patches = prefix + keep * branch_prefix, patches + keep * branch_patches
    torch.testing.assert_close(out_prefix, expected_prefix)
    torch.testing.assert_close(out_patches, expected_patches)
    expected_grads = torch.autograd.grad(
        loss(expected_prefix, expected_patches), list(block.parameters()), allow_unused=True
    )
    for got, expected in zip(grads, expected_grads, strict=True):
        assert (got is None) == (expected is None)
        if got is not None:
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    if branch_name == "_attention_branch":
        assert seen == [6]  # the dropped samples cost nothing


def test_batch_subset_residual_is_unbiased_and_eval_runs_everything():
    model = randomize(tiny(drop_path_rate=0.4, depth=1, specialization="paper")).train()
    block = model.blocks[0]
    prefix, patches = torch.randn(5, 1, 48), torch.randn(5, 16, 48)
    torch.manual_seed(0)
    with torch.no_grad():
        full = block._attention_branch(prefix, patches)
        draws = torch.stack([block._subset_residual(prefix, patches, block._attention_branch)[1] for _ in range(400)])
    # E[x + keep * branch] = x + branch: each sample is kept with probability 3/5 and scaled by 5/3.
    torch.testing.assert_close(draws.mean(0), patches + full[1], atol=0.2 * full[1].abs().max().item(), rtol=0)
    no_drop = tiny(depth=1, specialization="paper").eval()
    no_drop.load_state_dict(model.state_dict())
    model.eval()  # evaluation: the whole batch, no scaling, as without stochastic depth
    torch.testing.assert_close(block(prefix, patches), no_drop.blocks[0](prefix, patches))


def test_bad_masks_offsets_and_layer_requests_are_named():
    model = tiny(depth=3)
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="masks must be a bool tensor"):
        model.forward_features(images, masks=torch.zeros(1, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"interpolate_offset must be in \[0, 1\)"):
        tiny(interpolate_offset=1.5)
    with pytest.raises(ValueError, match="repeat an index"):
        model.get_intermediate_layers(images, n=[1, 1])
    with pytest.raises(ValueError, match="n=4 last blocks of a 3-block model"):
        model.get_intermediate_layers(images, n=4)
    assert model.get_intermediate_layers(images, n=1, reshape=True)[0].is_contiguous()  # as DINOv2


def test_zero_layerscale_init_means_no_layerscale_like_dinov2():
    assert not any(isinstance(m, LayerScale) for m in tiny(layerscale_init=0.0).modules())


def test_stochastic_depth_modes():
    dinov2 = tiny(drop_path_rate=0.3, drop_path_uniform=False, depth=4)
    assert [b.batch_subset for b in dinov2.blocks] == [False, True, True, True]  # every rate above 0
    assert [b.kept_samples(16) for b in dinov2.blocks] == [16, 14, 12, 11]  # int(16 * (1 - rate)) of 16
    assert dinov2.blocks[3].kept_samples(1) == 1  # as DINOv2: at batch 1 nothing is dropped
    per_sample = tiny(drop_path_rate=0.3, stochastic_depth="per_sample")
    assert not any(b.batch_subset for b in per_sample.blocks)
    with pytest.raises(ValueError, match="stochastic_depth must be 'dinov2' or 'per_sample'"):
        tiny(stochastic_depth="subset")


def test_drop_path_rate_is_uniform_by_default_and_linear_on_request():
    assert [b.drop_path_rate for b in tiny(drop_path_rate=0.3).blocks] == [0.3] * 3
    assert [b.drop_path_rate for b in tiny(drop_path_rate=0.3, drop_path_uniform=False).blocks] == pytest.approx(
        [0.0, 0.15, 0.3]
    )


def test_no_layerscale_when_init_is_none():
    model = tiny(layerscale_init=None, specialization="paper")
    assert not any("ls1" in name or "ls2" in name for name, _ in model.named_parameters())
    model.forward_features(torch.randn(1, 3, 32, 32))


def test_size_presets():
    expected = {vit_tiny: (192, 12, 3), vit_small: (384, 12, 6), vit_base: (768, 12, 12),
                vit_large: (1024, 24, 16), vit_giant: (1536, 40, 24)}  # fmt: skip
    for preset, (dim, depth, heads) in expected.items():
        with torch.device("meta"):
            model = preset(patch_size=14, num_registers=4, specialization="paper", img_size=98)
        assert (model.embed_dim, model.depth, model.blocks[0].attn.num_heads) == (dim, depth, heads)
        assert model.patch_size == 14 and model.register_tokens.shape == (1, 4, dim)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(img_size=30), "img_size 30 is not divisible by patch_size 8"),
        (dict(num_registers=-1), "num_registers must be >= 0"),
        (dict(drop_path_rate=1.0), r"drop_path_rate must be in \[0, 1\)"),
        (dict(embed_dim=50), "embed_dim 50 must be divisible by num_heads 3"),
        (dict(specialization="qkv:0-5"), r"'qkv'.*block index 5 is out of range.*0\.\.2"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


def test_bad_image_shapes():
    model = tiny()
    with pytest.raises(ValueError, match=r"image size 30x32 is not divisible by the patch size 8"):
        model(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"expected images of shape \[B, C, H, W\]"):
        model(torch.randn(3, 32, 32))


def test_gradients_reach_both_paths_of_a_specialized_model():
    model = tiny(specialization="paper", num_registers=1).train()
    out = model.forward_features(torch.randn(2, 3, 32, 32))
    # Random weights: a plain sum of LayerNorm outputs has zero gradient when the norm weight is 1.
    loss = (out["x_norm_clstoken"] * torch.randn(48)).sum() + (out["x_norm_patchtokens"] * torch.randn(48)).sum()
    loss.backward()
    for name, parameter in model.named_parameters():
        if name == "mask_token":
            continue
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_patch_tokens_enter_the_blocks_contiguous():
    # The conv's [B, D, h, w] output read as [B, N, D] is a transposed view; copied once, up front.
    prefix, patches = tiny(num_registers=1).prepare_tokens(torch.randn(2, 3, 32, 32))
    assert patches.is_contiguous() and prefix.is_contiguous()
