"""Pre-norm transformer block over the (prefix, patches) token pair, with specializable parts."""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.specialized_layers import (
    LayerScale,
    TokenIdentity,
    TokenLayerNorm,
    TokenLinear,
    TokenMlp,
    TokenPair,
    drop_path,
)
from clsvit_lightning.models.swiglu import SWIGLU_ALIGN, TokenSwiGLU

Rope = tuple[Tensor, Tensor]  # (sin, cos) of the patch grid, each [N, head_dim] (``rope.RopePositionEmbedding``)
FFN_LAYERS = ("mlp", *SWIGLU_ALIGN)  # "mlp" (GELU) and DINOv3's SwiGLU names


class Attention(nn.Module):
    """Multi-head self-attention over all tokens; ``qkv`` and ``proj`` are specializable.

    Whatever is specialized, attention itself mixes every token with every other: the query, key
    and value of both groups are joined into one sequence ``[CLS, registers, patches]``. With
    ``rope`` (DINOv3), the patches' queries and keys are then rotated in place, in the rope's
    dtype (:func:`rotate_patches_`); [CLS] and the registers are not. ``mask_k_bias`` (DINOv3)
    gives ``qkv`` a ``bias_mask`` buffer that is 0 on the key third: a key bias only adds the same
    ``q . b`` to every logit of a query, so without RoPE softmax ignores it, and DINOv3 keeps it out.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        specialize_qkv: bool = False,
        specialize_proj: bool = False,
        prefix_path_tokens: int | None = None,
        mask_k_bias: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        if mask_k_bias and not qkv_bias:
            raise ConfigError("mask_k_bias masks the key third of the qkv bias; it needs qkv_bias=True")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        bias_mask = torch.ones(3 * dim).index_fill_(0, torch.arange(dim, 2 * dim), 0.0) if mask_k_bias else None
        self.qkv = TokenLinear(
            dim,
            3 * dim,
            bias=qkv_bias,
            specialized=specialize_qkv,
            prefix_path_tokens=prefix_path_tokens,
            bias_mask=bias_mask,
        )
        self.proj = TokenLinear(dim, dim, specialized=specialize_proj, prefix_path_tokens=prefix_path_tokens)

    def _joint_qkv(self, prefix: Tensor, patches: Tensor, rope: Rope | None = None) -> Tensor:
        """Queries, keys and values of all tokens: ``[3, B, heads, P + N, head_dim]``."""
        qkv_prefix, qkv_patches = self.qkv(prefix, patches)  # [B, P, 3D], [B, N, 3D]
        batch = prefix.shape[0]
        # [B, T, 3D] -> [3, B, heads, T, head_dim]; the concatenation is the one copy of the
        # block, and it yields contiguous q/k/v. Vanilla and specialized models run the same ops
        # (the vanilla qkv simply passes its shared matrix twice), so a warm-started specialized
        # model reproduces the vanilla one bit for bit.
        qkv = torch.cat(
            [
                qkv_prefix.view(batch, -1, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4),
                qkv_patches.view(batch, -1, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4),
            ],
            dim=3,
        )
        if rope is not None:
            rotate_patches_(qkv, prefix.shape[1], rope)
        return qkv

    def forward(self, prefix: Tensor, patches: Tensor, rope: Rope | None = None) -> TokenPair:
        batch, num_prefix, dim = prefix.shape
        q, k, v = self._joint_qkv(prefix, patches, rope)  # [B, heads, T, head_dim] each
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)  # [B, T, heads, head_dim]
        mixed_prefix = out[:, :num_prefix].reshape(batch, num_prefix, dim)  # [B, P, D]
        mixed_patches = out[:, num_prefix:].reshape(batch, -1, dim)  # [B, N, D]
        return self.proj(mixed_prefix, mixed_patches)

    def attention_probs(self, prefix: Tensor, patches: Tensor, rope: Rope | None = None) -> Tensor:
        """The softmax attention matrix ``[B, heads, T, T]`` (for analysis; not used in training)."""
        q, k, _ = self._joint_qkv(prefix, patches, rope)
        return torch.softmax((q * self.head_dim**-0.5) @ k.transpose(-2, -1), dim=-1)


def rotate_patches_(qkv: Tensor, num_prefix: int, rope: Rope) -> None:
    """RoPE, in place, on the patches' queries and keys of ``qkv [3, B, heads, P + N, head_dim]``.

    ``rope.rope_apply`` (DINOv3's ``x cos + rotate_half(x) sin``, in the rope's dtype, cast back)
    written on the two halves of each head, whose angles are the same (``rope_angles`` tiles them
    twice): ``[x1, x2] -> [x1 cos - x2 sin, x2 cos + x1 sin]``, bit for bit what ``rope_apply``
    gives (``a + (-b) s`` is ``a - b s`` in IEEE arithmetic). Rotating in place, on contiguous
    half-rows, spares ``rotate_half``'s negation and concatenations and the rejoining of q, k and v:
    the whole DINOv3 ViT-S/16 forward took about 10 % longer with those (CPU, 2 threads).
    """
    sin, cos = rope
    half = qkv.shape[-1] // 2
    sin, cos = sin[:, :half], cos[:, :half]  # [N, head_dim / 2]
    patches = qkv[:2, :, :, num_prefix:]  # q and k of the patches, [2, B, heads, N, head_dim]
    first, second = patches[..., :half].to(sin.dtype), patches[..., half:].to(sin.dtype)
    turned_first, turned_second = first * cos - second * sin, second * cos + first * sin
    patches[..., :half] = turned_first  # cast back to q's dtype, as DINOv3 does
    patches[..., half:] = turned_second


def token_ffn(
    dim: int, mlp_ratio: float, ffn_layer: str, specialized: bool, prefix_path_tokens: int | None
) -> nn.Module:
    """The block's feed-forward layer: ``TokenMlp`` (GELU, ``fc1``/``fc2``) or ``TokenSwiGLU`` (``w1``/``w2``/``w3``).

    The hidden size is ``int(dim * mlp_ratio)``; SwiGLU takes 2/3 of it, rounded up to its
    ``align_to`` (``swiglu``: 8, ``swiglu64``: 64, ...), as DINOv3 does.
    """
    hidden = int(dim * mlp_ratio)
    if ffn_layer == "mlp":
        return TokenMlp(dim, hidden, specialized=specialized, prefix_path_tokens=prefix_path_tokens)
    if ffn_layer in SWIGLU_ALIGN:
        return TokenSwiGLU(
            dim, hidden, SWIGLU_ALIGN[ffn_layer], specialized=specialized, prefix_path_tokens=prefix_path_tokens
        )
    raise ConfigError(f"ffn_layer must be one of {list(FFN_LAYERS)}, got {ffn_layer!r}")


class Block(nn.Module):
    """``x + drop_path(ls1(attn(norm1(x))))``, then ``x + drop_path(ls2(mlp(norm2(x))))``.

    Stochastic depth is a per-sample mask (``drop_path``), or with ``batch_subset`` DINOv2's
    batch-subset residual (:meth:`_subset_residual`), which skips the dropped samples' compute.
    ``specialized`` holds the components (names from ``specialization.COMPONENTS``) that get a
    separate prefix-token path in this block; ``prefix_path_tokens`` goes to their layers (see
    ``specialized_layers.py``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        layerscale_init: float | None = 1e-5,
        drop_path_rate: float = 0.0,
        batch_subset: bool = False,
        specialized: Collection[str] = (),
        prefix_path_tokens: int | None = None,
        ffn_layer: str = "mlp",
        norm_eps: float = 1e-6,
        mask_k_bias: bool = False,
    ) -> None:
        super().__init__()
        self.specialized = frozenset(specialized)
        self.drop_path_rate = drop_path_rate
        self.batch_subset = batch_subset and drop_path_rate > 0
        self.norm1 = TokenLayerNorm(
            dim, specialized="norm1" in self.specialized, eps=norm_eps, prefix_path_tokens=prefix_path_tokens
        )
        self.attn = Attention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            specialize_qkv="qkv" in self.specialized,
            specialize_proj="proj" in self.specialized,
            prefix_path_tokens=prefix_path_tokens,
            mask_k_bias=mask_k_bias,
        )
        self.ls1 = self._layer_scale(dim, layerscale_init, "ls1", prefix_path_tokens)
        self.norm2 = TokenLayerNorm(
            dim, specialized="norm2" in self.specialized, eps=norm_eps, prefix_path_tokens=prefix_path_tokens
        )
        self.mlp = token_ffn(dim, mlp_ratio, ffn_layer, "mlp" in self.specialized, prefix_path_tokens)
        self.ls2 = self._layer_scale(dim, layerscale_init, "ls2", prefix_path_tokens)

    def _layer_scale(self, dim: int, init: float | None, name: str, prefix_path_tokens: int | None) -> nn.Module:
        if not init:  # None or 0: no LayerScale (DINOv2: `LayerScale(...) if init_values else nn.Identity()`)
            return TokenIdentity()
        return LayerScale(dim, init, specialized=name in self.specialized, prefix_path_tokens=prefix_path_tokens)

    def forward(self, prefix: Tensor, patches: Tensor, rope: Rope | None = None) -> TokenPair:
        """``rope``: the patches' ``(sin, cos)`` (RoPE models); the same for every sample of the batch."""
        if self.training and self.batch_subset:
            attention = lambda p, x: self._attention_branch(p, x, rope)
            prefix, patches = self._subset_residual(prefix, patches, attention)
            return self._subset_residual(prefix, patches, self._mlp_branch)
        prefix, patches = self._add_residual(prefix, patches, self._attention_branch(prefix, patches, rope))
        return self._add_residual(prefix, patches, self._mlp_branch(prefix, patches))

    def _attention_branch(self, prefix: Tensor, patches: Tensor, rope: Rope | None = None) -> TokenPair:
        return self.ls1(*self.attn(*self.norm1(prefix, patches), rope))

    def _mlp_branch(self, prefix: Tensor, patches: Tensor) -> TokenPair:
        return self.ls2(*self.mlp(*self.norm2(prefix, patches)))

    def kept_samples(self, batch_size: int) -> int:
        """How many samples of a training batch run this block's branches."""
        if not self.batch_subset:
            return batch_size
        return max(int(batch_size * (1 - self.drop_path_rate)), 1)

    def work_fraction(self, batch_size: int) -> float:
        """Fraction of a training batch's branch FLOPs this block performs."""
        return self.kept_samples(batch_size) / batch_size

    def _subset_residual(
        self, prefix: Tensor, patches: Tensor, branch: Callable[[Tensor, Tensor], TokenPair]
    ) -> TokenPair:
        """DINOv2's stochastic depth: the branch runs on ``max(int(B * (1 - rate)), 1)`` random samples.

        Their residual is scaled by ``B / kept`` (the expectation is unchanged) and the other samples
        pass through, so a dropped sample costs no compute (at rate 0.4 and batch 16, the blocks do
        9/16 of the work). Both token groups keep the same samples. As in DINOv2, small batches drop
        less or more than the rate says: at batch 1 the branch always runs.
        """
        batch = prefix.shape[0]
        kept = self.kept_samples(batch)
        subset = torch.randperm(batch, device=prefix.device)[:kept]
        branch_prefix, branch_patches = branch(prefix[subset], patches[subset])
        scale = batch / kept
        return (
            torch.index_add(prefix, 0, subset, branch_prefix.to(prefix.dtype), alpha=scale),
            torch.index_add(patches, 0, subset, branch_patches.to(patches.dtype), alpha=scale),
        )

    def _add_residual(self, prefix: Tensor, patches: Tensor, branch: TokenPair) -> TokenPair:
        branch_prefix, branch_patches = drop_path(*branch, self.drop_path_rate, self.training)
        return prefix + branch_prefix, patches + branch_patches
