"""The independent DINOv3 reference forward (``dinov3_reference.py``) is itself consistent.

Without RoPE it is the DINOv2 reference with registers and a zero pos_embed; with RoPE its
attention matches one built from the package's ``rope.py``; it honours the key-bias mask and
the untied final norms; and it reads every key of the official layout.
"""

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from clsvit_lightning.models.dinov3_keys import DINOv3Arch, dinov3_state_dict_shapes
from clsvit_lightning.models.rope import RopePositionEmbedding, rope_patch_tokens
from tests.models.dinov3_reference import random_state_dict, reference_forward
from tests.models.reference_vit import reference_forward as dinov2_reference_forward

ARCH = DINOv3Arch(32, 2, 4, n_storage_tokens=2, patch_size=4)  # head_dim 8
IMAGES_SHAPE = (2, 3, 12, 16)  # a 3 x 4 patch grid


def make_state(arch=ARCH, seed=0):
    return random_state_dict(dinov3_state_dict_shapes(arch), seed=seed)


def test_without_rope_it_is_dinov2_with_registers_and_no_pos_embed():
    state = make_state()
    images = torch.randn(IMAGES_SHAPE)
    ours = reference_forward(state, images, rope=False, norm_eps=1e-6)
    dinov2 = {k: v for k, v in state.items() if not k.endswith("bias_mask") and k not in ("rope_embed.periods",)}
    dinov2["register_tokens"] = dinov2.pop("storage_tokens")
    dinov2["pos_embed"] = torch.zeros(1, 1 + 12, 32)
    for i in range(ARCH.depth):  # DINOv2 has no mask: fold it into the bias
        dinov2[f"blocks.{i}.attn.qkv.bias"] = (
            state[f"blocks.{i}.attn.qkv.bias"] * state[f"blocks.{i}.attn.qkv.bias_mask"]
        )
    normed, prenorm = dinov2_reference_forward(dinov2, images, patch_size=4, num_heads=4, depth=ARCH.depth)
    torch.testing.assert_close(ours["x_prenorm"], prenorm)
    torch.testing.assert_close(ours["x_norm_clstoken"], normed[:, 0])
    torch.testing.assert_close(ours["x_storage_tokens"], normed[:, 1:3])
    torch.testing.assert_close(ours["x_norm_patchtokens"], normed[:, 3:])


def test_attention_with_rope_matches_the_package_rope():
    """One block's attention logits, the reference against ``rope.py``'s ``rope_patch_tokens``."""
    state = make_state(DINOv3Arch(32, 1, 4, n_storage_tokens=2, patch_size=4, layerscale_init=None))
    for key in [k for k in state if ".mlp." in k]:
        state[key] = torch.zeros_like(state[key])  # the block adds attention alone
    state["blocks.0.attn.proj.weight"] = torch.eye(32)
    state["blocks.0.attn.proj.bias"] = torch.zeros(32)
    images = torch.randn(IMAGES_SHAPE).double()
    expected = reference_forward(state, images)["x_prenorm"]

    x = F.conv2d(images, state["patch_embed.proj.weight"].double(), state["patch_embed.proj.bias"].double(), stride=4)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat(
        [state["cls_token"].double().expand(2, -1, -1), state["storage_tokens"].double().expand(2, -1, -1), x], 1
    )
    h = F.layer_norm(x, (32,), state["blocks.0.norm1.weight"].double(), state["blocks.0.norm1.bias"].double(), 1e-5)
    bias = (state["blocks.0.attn.qkv.bias"] * state["blocks.0.attn.qkv.bias_mask"]).double()
    q, k, v = (
        F.linear(h, state["blocks.0.attn.qkv.weight"].double(), bias).reshape(2, -1, 3, 4, 8).permute(2, 0, 3, 1, 4)
    )
    sin, cos = RopePositionEmbedding(32, 4, dtype=torch.float64)(3, 4)
    q, k = rope_patch_tokens(q, k, sin, cos)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, -1, 32)
    torch.testing.assert_close(expected, x + out)


def test_masked_key_bias_changes_nothing():
    state = make_state()
    images = torch.randn(IMAGES_SHAPE)
    before = reference_forward(state, images)["x_prenorm"]
    for i in range(ARCH.depth):
        state[f"blocks.{i}.attn.qkv.bias"][32:64] += 5.0  # the k third, multiplied by bias_mask = 0
    torch.testing.assert_close(reference_forward(state, images)["x_prenorm"], before)


def test_an_unmasked_key_bias_matters_only_with_rope():
    """Without RoPE a key bias adds ``q . b`` to every logit of a query: softmax ignores it. RoPE turns
    ``b`` differently at each patch, so with RoPE it would change the attention."""
    state = make_state()
    for i in range(ARCH.depth):
        state[f"blocks.{i}.attn.qkv.bias_mask"] = torch.ones(96)
    images = torch.randn(IMAGES_SHAPE)
    shifted = {k: v.clone() for k, v in state.items()}
    for i in range(ARCH.depth):
        shifted[f"blocks.{i}.attn.qkv.bias"][32:64] += 1.0
    plain = [reference_forward(s, images, rope=False)["x_prenorm"] for s in (state, shifted)]
    torch.testing.assert_close(plain[0], plain[1])
    rotated = [reference_forward(s, images)["x_prenorm"] for s in (state, shifted)]
    assert not torch.allclose(rotated[0], rotated[1])


def test_rope_is_the_identity_at_the_grid_centre():
    """A single patch sits at (0, 0): RoPE turns it by 0. On a larger grid it changes the output."""
    state = make_state()
    images = torch.randn(2, 3, 4, 4)  # one patch at (0, 0): angle 0, so RoPE is the identity
    with_rope, without = reference_forward(state, images), reference_forward(state, images, rope=False)
    torch.testing.assert_close(with_rope["x_prenorm"], without["x_prenorm"])
    images = torch.randn(IMAGES_SHAPE)
    assert not torch.allclose(
        reference_forward(state, images)["x_prenorm"], reference_forward(state, images, rope=False)["x_prenorm"]
    )


def test_untied_final_norms_normalise_cls_and_storage_tokens():
    arch = DINOv3Arch(
        32, 2, 4, n_storage_tokens=2, patch_size=4, untie_cls_and_patch_norms=True, untie_global_and_local_cls_norm=True
    )
    state = make_state(arch)
    images = torch.randn(IMAGES_SHAPE)
    out = reference_forward(state, images)
    prefix = out["x_prenorm"][:, :3]
    cls_norm = F.layer_norm(prefix, (32,), state["cls_norm.weight"].double(), state["cls_norm.bias"].double(), 1e-5)
    torch.testing.assert_close(out["x_norm_clstoken"], cls_norm[:, 0])
    torch.testing.assert_close(out["x_storage_tokens"], cls_norm[:, 1:])
    patches = F.layer_norm(
        out["x_prenorm"][:, 3:], (32,), state["norm.weight"].double(), state["norm.bias"].double(), 1e-5
    )
    torch.testing.assert_close(out["x_norm_patchtokens"], patches)
    local = reference_forward(state, images, local_crops=True)
    torch.testing.assert_close(local["x_norm_patchtokens"], out["x_norm_patchtokens"])
    local_norm = F.layer_norm(
        prefix, (32,), state["local_cls_norm.weight"].double(), state["local_cls_norm.bias"].double(), 1e-5
    )
    torch.testing.assert_close(local["x_norm_clstoken"], local_norm[:, 0])


def test_masked_patches_take_the_mask_token():
    state = make_state()
    images = torch.randn(IMAGES_SHAPE)
    masks = torch.zeros(2, 12, dtype=torch.bool)
    masks[0, 5] = True
    out = reference_forward(state, images, masks)
    other = images.clone()
    other[0, :, 4:8, 4:8] = 100.0  # patch (1, 1) = token 5, hidden by the mask
    torch.testing.assert_close(reference_forward(state, other, masks)["x_prenorm"], out["x_prenorm"])
    assert not torch.allclose(reference_forward(state, other)["x_prenorm"], out["x_prenorm"])


class Recorder(Mapping):
    def __init__(self, state):
        self.state, self.read = state, set()

    def __getitem__(self, key):
        value = self.state[key]  # a missing key raises before it counts as read
        self.read.add(key)
        return value

    def __contains__(self, key):  # a presence check is not a read
        return key in self.state

    def __iter__(self):
        return iter(self.state)

    def __len__(self):
        return len(self.state)


def test_reads_every_key_of_the_official_layout():
    for arch in (
        ARCH,
        DINOv3Arch(32, 2, 4, 3, "swiglu64", qkv_bias=False, patch_size=4, untie_cls_and_patch_norms=True),
    ):
        state = Recorder(make_state(arch))
        masks = torch.zeros(2, 12, dtype=torch.bool)
        reference_forward(state, torch.randn(IMAGES_SHAPE), masks)
        assert state.read == set(dinov3_state_dict_shapes(arch)), set(dinov3_state_dict_shapes(arch)) ^ state.read


def test_outputs_have_dinov3_keys_and_shapes():
    out = reference_forward(make_state(), torch.randn(IMAGES_SHAPE))
    assert set(out) == {"x_norm_clstoken", "x_storage_tokens", "x_norm_patchtokens", "x_prenorm", "masks"}
    assert out["x_norm_clstoken"].shape == (2, 32) and out["x_storage_tokens"].shape == (2, 2, 32)
    assert out["x_norm_patchtokens"].shape == (2, 12, 32) and out["x_prenorm"].shape == (2, 15, 32)
    assert math.isfinite(out["x_prenorm"].abs().max().item())
