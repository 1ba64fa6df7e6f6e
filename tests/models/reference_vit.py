"""An independent, single-tensor ViT forward written from the DINOv2 description
(``dinov2/models/vision_transformer.py``, ``dinov2/layers/``).

It reads the same state-dict keys as the backbone but shares none of its code: the tests use it
to check that the two-stream implementation computes the textbook function, and that a
specialized model uses its ``prefix_*`` parameters exactly for the prefix tokens.
"""

import torch
import torch.nn.functional as F


def _ln(x, state, key, prefix_rows):
    """LayerNorm with the prefix twin (if present) applied to the first ``prefix_rows`` tokens."""
    out = F.layer_norm(x, x.shape[-1:], state[f"{key}.weight"], state[f"{key}.bias"], 1e-6)
    if f"{key}.prefix_weight" in state:
        head = F.layer_norm(
            x[:, :prefix_rows], x.shape[-1:], state[f"{key}.prefix_weight"], state[f"{key}.prefix_bias"], 1e-6
        )
        out = torch.cat([head, out[:, prefix_rows:]], dim=1)
    return out


def _linear(x, state, key, prefix_rows):
    out = F.linear(x, state[f"{key}.weight"], state.get(f"{key}.bias"))
    if f"{key}.prefix_weight" in state:
        head = F.linear(x[:, :prefix_rows], state[f"{key}.prefix_weight"], state.get(f"{key}.prefix_bias"))
        out = torch.cat([head, out[:, prefix_rows:]], dim=1)
    return out


def _scale(x, state, key, prefix_rows):
    if f"{key}.gamma" not in state:
        return x
    gamma = state[f"{key}.gamma"].expand(x.shape[1], -1).clone()  # [T, D]
    if f"{key}.prefix_gamma" in state:
        gamma[:prefix_rows] = state[f"{key}.prefix_gamma"]
    return x * gamma


def reference_forward(state, images, patch_size, num_heads, depth, prefix_rows=None):
    """Returns (normed tokens [B, T, D], prenorm tokens [B, T, D]) for sequence [CLS, regs, patches]."""
    state = {k: v.double() for k, v in state.items()}
    images = images.double()
    x = F.conv2d(images, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=patch_size)
    batch, dim, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([state["cls_token"].expand(batch, -1, -1), x], dim=1) + state["pos_embed"]
    if "register_tokens" in state:
        regs = state["register_tokens"].expand(batch, -1, -1)
        x = torch.cat([x[:, :1], regs, x[:, 1:]], dim=1)
    prefix_rows = prefix_rows if prefix_rows is not None else 1 + state.get("register_tokens", x[:, :0]).shape[1]
    head_dim = dim // num_heads
    for i in range(depth):
        b = f"blocks.{i}"
        h_ = _ln(x, state, f"{b}.norm1", prefix_rows)
        qkv = _linear(h_, state, f"{b}.attn.qkv", prefix_rows)
        q, k, v = qkv.reshape(batch, -1, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2) / head_dim**0.5, dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(batch, -1, dim)
        x = x + _scale(_linear(o, state, f"{b}.attn.proj", prefix_rows), state, f"{b}.ls1", prefix_rows)
        h_ = _ln(x, state, f"{b}.norm2", prefix_rows)
        m = _linear(F.gelu(_linear(h_, state, f"{b}.mlp.fc1", prefix_rows)), state, f"{b}.mlp.fc2", prefix_rows)
        x = x + _scale(m, state, f"{b}.ls2", prefix_rows)
    return _ln(x, state, "norm", prefix_rows), x
