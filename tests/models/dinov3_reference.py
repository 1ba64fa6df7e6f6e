"""An independent, single-tensor DINOv3 ViT forward written from the description of
``dinov3/models/vision_transformer.py`` and ``dinov3/layers/`` (eval mode, no RoPE augmentation).

It reads an official-layout state dict (``cls_token``, ``storage_tokens``, ``rope_embed.periods``,
``blocks.{i}.attn.qkv.{weight,bias,bias_mask}``, ``mlp.fc1/fc2`` or ``mlp.w1/w2/w3``, ``norm``,
``cls_norm``, ``local_cls_norm``) and shares no code with the package: RoPE is written as complex
multiplication with coordinates computed position by position, so the tests can check the
package's vectorised RoPE and, later, the backbone against the textbook function.
"""

import math

import torch
import torch.nn.functional as F


def rope_angles(height, width, periods):
    """Angle of each rotation pair ``[H * W, head_dim / 2]``: the first half turn with y, the rest with x."""
    periods = [float(p) for p in periods]
    rows = []
    for i in range(height):  # row-major: token index i * width + j
        for j in range(width):
            y = 2 * (i + 0.5) / height - 1  # patch centre, "separate" normalisation, in [-1, 1]
            x = 2 * (j + 0.5) / width - 1
            rows.append([2 * math.pi * y / p for p in periods] + [2 * math.pi * x / p for p in periods])
    return torch.tensor(rows, dtype=torch.float64)


def rope_rotate(tokens, angles):
    """Turn each pair ``(tokens[..., c], tokens[..., c + head_dim / 2])`` by ``angles[:, c]``."""
    half = tokens.shape[-1] // 2
    pairs = torch.complex(tokens[..., :half], tokens[..., half:])  # a + ib
    turned = pairs * torch.polar(torch.ones_like(angles), angles)  # (a + ib) e^{i theta}
    return torch.cat([turned.real, turned.imag], dim=-1)


def _ln(x, state, key, eps):
    return F.layer_norm(x, x.shape[-1:], state[f"{key}.weight"].double(), state[f"{key}.bias"].double(), eps)


def _linear(x, state, key):
    bias = state.get(f"{key}.bias")
    return F.linear(x, state[f"{key}.weight"].double(), None if bias is None else bias.double())


def _ffn(x, state, key):
    if f"{key}.w1.weight" in state:  # SwiGLU
        return _linear(F.silu(_linear(x, state, f"{key}.w1")) * _linear(x, state, f"{key}.w2"), state, f"{key}.w3")
    return _linear(F.gelu(_linear(x, state, f"{key}.fc1")), state, f"{key}.fc2")


def _scale(x, state, key):
    return x * state[key].double() if key in state else x


def reference_forward(state, images, masks=None, *, norm_eps=1e-5, rope=True, local_crops=False):
    """DINOv3's output dict for ``images [B, 3, H, W]``, computed in float64.

    ``rope=False`` drops RoPE (the rest is DINOv2 with registers and no pos_embed); ``local_crops``
    normalises [CLS] + storage tokens with ``local_cls_norm`` (DINOv3 does so for the local-crop
    group in training only).
    """
    images = images.double()
    patch_weight = state["patch_embed.proj.weight"].double()
    patch = patch_weight.shape[-1]
    x = F.conv2d(images, patch_weight, state["patch_embed.proj.bias"].double(), stride=patch)
    batch, dim, height, width = x.shape
    x = x.flatten(2).transpose(1, 2)  # [B, N, D]
    if masks is not None:
        x = torch.where(masks[..., None], state["mask_token"].double(), x)
    storage = state["storage_tokens"].double() if "storage_tokens" in state else x.new_zeros(1, 0, dim)
    x = torch.cat([state["cls_token"].double().expand(batch, -1, -1), storage.expand(batch, -1, -1), x], dim=1)
    num_prefix = 1 + storage.shape[1]
    periods = state["rope_embed.periods"]
    head_dim = 4 * periods.shape[0]
    heads = dim // head_dim
    angles = rope_angles(height, width, periods)
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(depth):
        block = f"blocks.{i}"
        h = _ln(x, state, f"{block}.norm1", norm_eps)
        qkv_bias = state.get(f"{block}.attn.qkv.bias")
        if qkv_bias is not None and f"{block}.attn.qkv.bias_mask" in state:
            qkv_bias = qkv_bias * state[f"{block}.attn.qkv.bias_mask"]  # the k third is 0: no key bias
        qkv = F.linear(h, state[f"{block}.attn.qkv.weight"].double(), None if qkv_bias is None else qkv_bias.double())
        q, k, v = qkv.reshape(batch, -1, 3, heads, head_dim).permute(2, 0, 3, 1, 4)  # 3 x [B, heads, T, hd]
        if rope:  # patches only: [CLS] and storage tokens keep their q and k
            q = torch.cat([q[:, :, :num_prefix], rope_rotate(q[:, :, num_prefix:], angles)], dim=2)
            k = torch.cat([k[:, :, :num_prefix], rope_rotate(k[:, :, num_prefix:], angles)], dim=2)
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(batch, -1, dim)
        x = x + _scale(_linear(out, state, f"{block}.attn.proj"), state, f"{block}.ls1.gamma")
        x = x + _scale(
            _ffn(_ln(x, state, f"{block}.norm2", norm_eps), state, f"{block}.mlp"), state, f"{block}.ls2.gamma"
        )
    prefix_norm = "local_cls_norm" if local_crops else "cls_norm" if "cls_norm.weight" in state else "norm"
    prefix = _ln(x[:, :num_prefix], state, prefix_norm, norm_eps)
    return {
        "x_norm_clstoken": prefix[:, 0],
        "x_storage_tokens": prefix[:, 1:],
        "x_norm_patchtokens": _ln(x[:, num_prefix:], state, "norm", norm_eps),
        "x_prenorm": x,
        "masks": masks,
    }


def random_state_dict(shapes, seed=0, base=100.0):
    """A DINOv3-layout state dict with the given key shapes, values chosen so every part matters.

    LayerScale near 0.5 (not 1e-5) so that blocks change the tokens; the qkv bias mask is DINOv3's
    (0 on the k third); ``rope_embed.periods`` is ``base ** (4 i / head_dim)``.
    """
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key == "rope_embed.periods":
            head_dim = 4 * shape[0]
            state[key] = torch.tensor([base ** (4 * i / head_dim) for i in range(shape[0])], dtype=torch.float32)
        elif key.endswith("bias_mask"):
            third = shape[0] // 3
            state[key] = torch.cat([torch.ones(third), torch.zeros(third), torch.ones(third)])
        elif key.endswith(".gamma"):
            state[key] = 0.5 + 0.1 * torch.randn(shape, generator=generator)
        elif key.endswith("norm.weight") or ".norm1.weight" in key or ".norm2.weight" in key:
            state[key] = 1 + 0.2 * torch.randn(shape, generator=generator)
        elif key.endswith(".weight") and len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
        else:  # biases, tokens
            state[key] = 0.3 * torch.randn(shape, generator=generator)
    return state
