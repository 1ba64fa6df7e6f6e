"""Dense heads: the depth-bins head and the blocks the multilayer depth probe reads."""

import torch

from clsvit_lightning.models.heads import DepthBinsHead, depth_probe_blocks


def test_bins_head_is_a_convex_combination_of_bin_centres():
    head = DepthBinsHead(8, "bins", num_bins=5, min_depth=1.0, max_depth=5.0, upsample=2)
    features = torch.randn(2, 8, 3, 4)
    depth = head(features)
    assert depth.shape == (2, 1, 6, 8)
    assert depth.min() >= 1.0 and depth.max() <= 5.0
    up = torch.nn.functional.interpolate(features, scale_factor=2, mode="bilinear", align_corners=False)
    weights = torch.relu(head.conv(up)) + 0.1
    weights = weights / weights.sum(1, keepdim=True)
    torch.testing.assert_close(depth[:, 0], (weights * torch.linspace(1, 5, 5)[None, :, None, None]).sum(1))


def test_depth_probe_blocks_are_dinov2s_lists_else_evenly_spaced():
    # DINOv2's depth layers: ViT-S/B, L, g; other depths are evenly spaced.
    assert [depth_probe_blocks(d) for d in (12, 24, 40)] == [[2, 5, 8, 11], [4, 11, 17, 23], [9, 19, 29, 39]]
    assert depth_probe_blocks(8) == [1, 3, 5, 7] and depth_probe_blocks(24, 2) == [11, 23]
