"""Pre-norm transformer block over the (prefix, patches) token pair, with specializable parts."""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clsvit_lightning.models.token_ops import (
    LayerScale,
    TokenIdentity,
    TokenLayerNorm,
    TokenLinear,
    TokenMlp,
    TokenPair,
    drop_path,
)


class Attention(nn.Module):
    """Multi-head self-attention over all tokens; ``qkv`` and ``proj`` are specializable.

    Whatever is specialized, attention itself mixes every token with every other: the query, key
    and value of both groups are joined into one sequence ``[CLS, registers, patches]``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        specialize_qkv: bool = False,
        specialize_proj: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = TokenLinear(dim, 3 * dim, bias=qkv_bias, specialized=specialize_qkv)
        self.proj = TokenLinear(dim, dim, specialized=specialize_proj)

    def _joint_qkv(self, prefix: Tensor, patches: Tensor) -> Tensor:
        """Queries, keys and values of all tokens: ``[3, B, heads, P + N, head_dim]``."""
        qkv_prefix, qkv_patches = self.qkv(prefix, patches)  # [B, P, 3D], [B, N, 3D]
        batch = prefix.shape[0]
        # [B, T, 3D] -> [3, B, heads, T, head_dim]; the concatenation is the one copy of the
        # block, and it yields contiguous q/k/v. Vanilla and specialized models run the same ops
        # (the vanilla qkv simply passes its shared matrix twice), so a warm-started specialized
        # model reproduces the vanilla one bit for bit.
        return torch.cat(
            [
                qkv_prefix.view(batch, -1, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4),
                qkv_patches.view(batch, -1, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4),
            ],
            dim=3,
        )

    def forward(self, prefix: Tensor, patches: Tensor) -> TokenPair:
        batch, num_prefix, dim = prefix.shape
        q, k, v = self._joint_qkv(prefix, patches)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)  # [B, T, heads, head_dim]
        return self.proj(
            out[:, :num_prefix].reshape(batch, num_prefix, dim),  # [B, P, D]
            out[:, num_prefix:].reshape(batch, -1, dim),  # [B, N, D]
        )

    def attention_probs(self, prefix: Tensor, patches: Tensor) -> Tensor:
        """The softmax attention matrix ``[B, heads, T, T]`` (for analysis; not used in training)."""
        q, k, _ = self._joint_qkv(prefix, patches)
        return torch.softmax((q * self.head_dim**-0.5) @ k.transpose(-2, -1), dim=-1)


class Block(nn.Module):
    """``x + drop_path(ls1(attn(norm1(x))))``, then ``x + drop_path(ls2(mlp(norm2(x))))``.

    ``specialized`` holds the names of the components (``norm1``, ``qkv``, ``proj``, ``ls1``,
    ``norm2``, ``mlp``, ``ls2``) that get a separate prefix-token path in this block.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        layerscale_init: float | None = 1e-5,
        drop_path_rate: float = 0.0,
        specialized: Collection[str] = (),
    ) -> None:
        super().__init__()
        self.specialized = frozenset(specialized)
        self.drop_path_rate = drop_path_rate
        self.norm1 = TokenLayerNorm(dim, specialized="norm1" in self.specialized)
        self.attn = Attention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            specialize_qkv="qkv" in self.specialized,
            specialize_proj="proj" in self.specialized,
        )
        self.ls1 = self._layer_scale(dim, layerscale_init, "ls1")
        self.norm2 = TokenLayerNorm(dim, specialized="norm2" in self.specialized)
        self.mlp = TokenMlp(dim, int(dim * mlp_ratio), specialized="mlp" in self.specialized)
        self.ls2 = self._layer_scale(dim, layerscale_init, "ls2")

    def _layer_scale(self, dim: int, init: float | None, name: str) -> nn.Module:
        if init is None:
            return TokenIdentity()
        return LayerScale(dim, init, specialized=name in self.specialized)

    def forward(self, prefix: Tensor, patches: Tensor) -> TokenPair:
        branch = self.ls1(*self.attn(*self.norm1(prefix, patches)))
        prefix, patches = self._add_residual(prefix, patches, branch)
        branch = self.ls2(*self.mlp(*self.norm2(prefix, patches)))
        return self._add_residual(prefix, patches, branch)

    def _add_residual(self, prefix: Tensor, patches: Tensor, branch: TokenPair) -> TokenPair:
        branch_prefix, branch_patches = drop_path(*branch, self.drop_path_rate, self.training)
        return prefix + branch_prefix, patches + branch_patches
