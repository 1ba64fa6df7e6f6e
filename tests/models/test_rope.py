"""DINOv3's RoPE (``models/rope.py``): periods, coordinates, angle layout, rotation, augmentations."""

import math

import pytest
import torch
from torch import nn

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.rope import (
    RopePositionEmbedding,
    augment_coordinates,
    patch_coordinates,
    rope_angles,
    rope_apply,
    rope_patch_tokens,
    rope_periods,
)
from tests.models.dinov3_reference import rope_angles as reference_angles
from tests.models.dinov3_reference import rope_rotate as reference_rotate


def coords_of(sin, cos, head_dim, first_period):
    """Recover ``(y, x)`` from ``sin``/``cos`` ``[..., head_dim]`` while ``|2 pi coord / first_period| < pi``."""
    angles = torch.atan2(sin, cos)
    return torch.stack([angles[..., 0], angles[..., head_dim // 4]], dim=-1) * first_period / (2 * math.pi)


# ------------------------------------------------------------------ periods
def test_periods_from_base_by_hand():
    # head_dim 8: 2 periods, base ** (4 i / 8) = 100 ** 0, 100 ** 0.5.
    torch.testing.assert_close(rope_periods(8, base=100.0), torch.tensor([1.0, 10.0]))
    # head_dim 64 (every released DINOv3): 16 periods from 1 to 100 ** (60 / 64).
    periods = rope_periods(64, base=100.0)
    assert periods.shape == (16,)
    torch.testing.assert_close(periods, torch.tensor([100 ** (4 * i / 64) for i in range(16)]))


def test_periods_from_min_and_max_are_geometric():
    periods = rope_periods(16, base=None, min_period=0.5, max_period=8.0)
    # 4 periods from 0.5 to 8, each 16 ** (1/3) times the one before.
    torch.testing.assert_close(periods, torch.tensor([0.5 * 16 ** (i / 3) for i in range(4)]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base": None}, "give `base`"),
        ({"base": 100.0, "min_period": 1.0, "max_period": 10.0}, "not both"),
        ({"base": None, "min_period": 1.0}, "both min_period and max_period"),
    ],
)
def test_period_configuration_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        rope_periods(8, **kwargs)


def test_head_dim_must_be_divisible_by_4():
    with pytest.raises(ConfigError, match="divisible by 4"):
        RopePositionEmbedding(embed_dim=40, num_heads=4)  # head_dim 10
    with pytest.raises(ConfigError, match="embed_dim 40 / num_heads 4 = 10"):
        RopePositionEmbedding(embed_dim=40, num_heads=4)
    with pytest.raises(ConfigError, match="not divisible by num_heads"):
        RopePositionEmbedding(embed_dim=30, num_heads=4)


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="normalize_coords"):
        RopePositionEmbedding(32, 4, normalize_coords="both")
    with pytest.raises(ConfigError, match="rescale_coords must be >= 1"):
        RopePositionEmbedding(32, 4, rescale_coords=0.5)
    with pytest.raises(ConfigError, match="dtype"):
        RopePositionEmbedding(32, 4, dtype="fp64")


def test_periods_is_a_persistent_buffer_named_like_dinov3():
    backbone = nn.Module()
    backbone.rope_embed = RopePositionEmbedding(embed_dim=768, num_heads=12)
    assert list(backbone.state_dict()) == ["rope_embed.periods"]
    assert backbone.state_dict()["rope_embed.periods"].shape == (16,)
    assert not list(backbone.parameters())  # no learned weights
    # A loaded buffer is what forward uses (DINOv3 copies it student -> teacher).
    backbone.rope_embed.periods.mul_(2)
    sin, _ = backbone.rope_embed(1, 2)
    backbone.rope_embed.reset_parameters()
    assert not torch.equal(sin, backbone.rope_embed(1, 2)[0])


# -------------------------------------------------------------- coordinates
def test_coordinates_of_a_1x2_grid_by_hand():
    # Patch centres (0.5/1) and (0.5/2, 1.5/2) -> [-1, 1]: y = 0, x = -0.5 and 0.5.
    torch.testing.assert_close(patch_coordinates(1, 2, "separate"), torch.tensor([[0.0, -0.5], [0.0, 0.5]]))
    # "max": both axes over max(H, W) = 2: y = 2 * 0.25 - 1.
    torch.testing.assert_close(patch_coordinates(1, 2, "max"), torch.tensor([[-0.5, -0.5], [-0.5, 0.5]]))
    # "min": both axes over min(H, W) = 1: x = 2 * 1.5 - 1 = 2 leaves [-1, 1].
    torch.testing.assert_close(patch_coordinates(1, 2, "min"), torch.tensor([[0.0, 0.0], [0.0, 2.0]]))


def test_coordinates_are_row_major_on_a_non_square_grid():
    coords = patch_coordinates(2, 3)  # [6, 2]
    expected_y = torch.tensor([-0.5, -0.5, -0.5, 0.5, 0.5, 0.5])
    expected_x = torch.tensor([-2 / 3, 0.0, 2 / 3] * 2)
    torch.testing.assert_close(coords, torch.stack([expected_y, expected_x], dim=-1))


# ------------------------------------------------------------------- angles
def test_sin_cos_of_a_1x2_grid_by_hand():
    rope = RopePositionEmbedding(embed_dim=16, num_heads=2)  # head_dim 8, periods (1, 10)
    sin, cos = rope(1, 2)
    assert sin.shape == cos.shape == (2, 8) and sin.dtype == torch.float32
    # Token (y=0, x=-0.5): [y-angles | x-angles] = [0, 0, -pi, -pi/10], tiled twice.
    quarter = [0.0, 0.0, -math.pi, -math.pi / 10]
    torch.testing.assert_close(cos[0], torch.cos(torch.tensor(quarter * 2)))
    torch.testing.assert_close(sin[0], torch.sin(torch.tensor(quarter * 2)))
    torch.testing.assert_close(sin[1], -sin[0])  # x = +0.5 mirrors x = -0.5; y = 0 gives sin 0
    torch.testing.assert_close(cos[1], cos[0])


def test_angles_match_the_position_by_position_reference():
    periods = rope_periods(16)
    angles = rope_angles(patch_coordinates(3, 5), periods)  # [15, 16]
    torch.testing.assert_close(angles[:, :8].double(), reference_angles(3, 5, periods))
    torch.testing.assert_close(angles[:, 8:], angles[:, :8])  # tiled x2


# ----------------------------------------------------------------- rotation
def test_rope_apply_rotates_channel_c_with_c_plus_half():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])  # pairs (1, 3) and (2, 4)
    theta = torch.tensor([math.pi / 2, math.pi])
    angles = theta.tile(2)
    out = rope_apply(x, torch.sin(angles), torch.cos(angles))
    # (1, 3) turned by 90 degrees -> (-3, 1); (2, 4) turned by 180 degrees -> (-2, -4).
    torch.testing.assert_close(out, torch.tensor([-3.0, -2.0, 1.0, -4.0]))


def test_rotation_preserves_norms_and_matches_complex_multiplication():
    sin, cos = RopePositionEmbedding(64, 4, dtype=torch.float64)(4, 3)  # head_dim 16
    x = torch.randn(2, 4, 12, 16, dtype=torch.float64)
    out = rope_apply(x, sin, cos)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(out, reference_rotate(x, reference_angles(4, 3, rope_periods(16))))


def test_only_the_last_hw_tokens_are_rotated():
    sin, cos = RopePositionEmbedding(32, 2)(2, 3)  # 6 patches, head_dim 16
    q, k = torch.randn(2, 2, 5 + 6, 16), torch.randn(2, 2, 5 + 6, 16)  # [CLS] + 4 storage + 6 patches
    q_out, k_out = rope_patch_tokens(q, k, sin, cos)
    assert torch.equal(q_out[:, :, :5], q[:, :, :5]) and torch.equal(k_out[:, :, :5], k[:, :, :5])
    torch.testing.assert_close(q_out[:, :, 5:], rope_apply(q[:, :, 5:], sin, cos))
    torch.testing.assert_close(k_out[:, :, 5:], rope_apply(k[:, :, 5:], sin, cos))
    with pytest.raises(ValueError, match="6 patch tokens"):
        rope_patch_tokens(q[:, :, :4], k[:, :, :4], sin, cos)


def test_logits_depend_only_on_the_coordinate_difference():
    periods = rope_periods(16)
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)

    def logit(query_coords, key_coords):
        q_angles, k_angles = rope_angles(query_coords, periods).double(), rope_angles(key_coords, periods).double()
        return rope_apply(q, q_angles.sin(), q_angles.cos()) @ rope_apply(k, k_angles.sin(), k_angles.cos())

    a, b, shift = torch.tensor([0.3, -0.7]), torch.tensor([-0.2, 0.4]), torch.tensor([0.55, 0.1])
    torch.testing.assert_close(logit(a, b), logit(a + shift, b + shift))
    torch.testing.assert_close(logit(a, b), logit(a - b, torch.zeros(2)))
    assert not torch.allclose(logit(a, b), logit(a, b + shift))


def test_on_a_grid_shifted_pairs_have_equal_logits():
    sin, cos = RopePositionEmbedding(16, 1, dtype=torch.float64)(3, 4)  # non-square, "separate"
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    logits = rope_apply(q, sin, cos) @ rope_apply(k, sin, cos).T  # [12, 12]; token = 4 * row + col
    torch.testing.assert_close(logits[0, 5], logits[6, 11])  # (0,0)-(1,1) and (1,2)-(2,3)
    torch.testing.assert_close(logits[1, 0], logits[7, 6])  # (0,1)-(0,0) and (1,3)-(1,2)


# ------------------------------------------------------------------- dtypes
def test_rotation_runs_in_the_rope_dtype_and_casts_back():
    sin, cos = RopePositionEmbedding(32, 2, dtype="fp32")(2, 2)
    q = torch.randn(1, 2, 5, 16).bfloat16()
    q_out, _ = rope_patch_tokens(q, q, sin, cos)
    assert q_out.dtype == torch.bfloat16
    expected = rope_apply(q[:, :, 1:].float(), sin, cos).bfloat16()  # fp32 math, one rounding at the end
    assert torch.equal(q_out[:, :, 1:], expected)


def test_rope_dtype_survives_casting_the_module():
    rope = RopePositionEmbedding(32, 2, dtype=torch.float32).to(torch.bfloat16)
    sin, _ = rope(2, 2)
    assert sin.dtype == torch.float32  # as DINOv3: "don't rely on self.periods.dtype"
    assert RopePositionEmbedding(32, 2, dtype="bf16")(2, 2)[0].dtype == torch.bfloat16


# ------------------------------------------------------------ augmentations
def test_no_augmentation_in_eval_mode():
    rope = RopePositionEmbedding(32, 2, shift_coords=0.5, jitter_coords=2.0, rescale_coords=2.0).eval()
    plain = RopePositionEmbedding(32, 2)
    for got, expected in zip(rope(3, 4), plain(3, 4), strict=True):
        assert torch.equal(got, expected)


def test_rescale_multiplies_both_axes_by_one_log_uniform_factor():
    # Periods from 8: angles of coordinates up to 2 in magnitude stay within (-pi, pi) and can be read back.
    rope = RopePositionEmbedding(32, 2, base=None, min_period=8.0, max_period=64.0, rescale_coords=2.0).train()
    base = patch_coordinates(2, 4)  # no zero coordinate to divide by
    factors = []
    for seed in range(20):
        sin, cos = rope(2, 4, generator=torch.Generator().manual_seed(seed))
        coords = coords_of(sin, cos, 16, first_period=8.0)
        factor = coords / base
        torch.testing.assert_close(factor, factor[0, 0].expand_as(factor))  # one factor, both axes
        factors.append(factor[0, 0].item())
    assert all(0.5 - 1e-6 <= f <= 2.0 + 1e-6 for f in factors) and min(factors) < 1 < max(factors)


def test_jitter_scales_each_axis_and_shift_adds_one_offset_per_axis():
    base = patch_coordinates(2, 4)  # no zero coordinate to divide by
    jittered = augment_coordinates(base, jitter=3.0, generator=torch.Generator().manual_seed(1))
    factor = jittered / base  # [12, 2]: a column factor per axis
    torch.testing.assert_close(factor, factor[:1].expand_as(factor))
    assert not torch.allclose(factor[0, 0], factor[0, 1])
    shifted = augment_coordinates(base, shift=0.25, generator=torch.Generator().manual_seed(1))
    offset = shifted - base
    torch.testing.assert_close(offset, offset[:1].expand_as(offset))
    assert offset.abs().max() <= 0.25


def test_augmentations_draw_from_the_global_rng_in_dinov3_order():
    """Shift (2 numbers), then jitter (2), then rescale (1), from the global RNG without a generator."""
    rope = RopePositionEmbedding(32, 2, shift_coords=0.1, jitter_coords=1.5, rescale_coords=2.0).train()
    torch.manual_seed(7)
    sin, cos = rope(2, 3)
    torch.manual_seed(7)
    shift = torch.empty(2).uniform_(-0.1, 0.1)
    jitter = torch.empty(2).uniform_(-math.log(1.5), math.log(1.5)).exp()
    rescale = torch.empty(1).uniform_(-math.log(2.0), math.log(2.0)).exp()
    coords = (patch_coordinates(2, 3) + shift) * jitter * rescale
    angles = rope_angles(coords, rope.periods)
    torch.testing.assert_close(sin, angles.sin())
    torch.testing.assert_close(cos, angles.cos())
    # A generator leaves the global RNG alone and reproduces itself.
    state = torch.get_rng_state()
    first = rope(2, 3, generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(first, rope(2, 3, generator=torch.Generator().manual_seed(3))[0])
    assert torch.equal(state, torch.get_rng_state())
