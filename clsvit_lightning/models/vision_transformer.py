"""Vision Transformer with [CLS], registers and layer specialization: DINOv2's and DINOv3's backbones.

Token sequence: ``[CLS, R registers, N patches]``; the registers get no positional embedding.
Inside the blocks the sequence travels as a pair ``(prefix [B, 1 + R, D], patches [B, N, D])``
(see ``specialized_layers``). With ``registers_path="cls"`` (default) the registers take the [CLS]
parameters of specialized components; with ``registers_path="patch"`` they take the patch ones.
State-dict keys are DINOv2's (``cls_token``, ``register_tokens``, ``pos_embed``, ``mask_token``,
``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,...}``, ``norm``), with
``prefix_*`` parameters beside the shared ones where a component is specialized.

The DINOv3 family (Siméoni et al., 2025; presets in ``dinov3.py``) is the same class built with
``position_encoding="rope"``: no ``pos_embed``, a ``rope_embed`` module whose rotation the blocks
apply to the patches' queries and keys; its 4 storage tokens are the registers, ``ffn_layer``
may be a SwiGLU (``mlp.w1/w2/w3``), ``mask_k_bias`` masks the key bias (``attn.qkv.bias_mask``) and
``norm_eps`` is 1e-5. DINOv3's untied final norm (``cls_norm``, for [CLS] and the storage tokens)
is the ``final_norm`` specialization's prefix path (``norm.prefix_weight``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.block import FFN_LAYERS, Block, Rope
from clsvit_lightning.models.rope import RopePositionEmbedding
from clsvit_lightning.models.specialization import Specialization
from clsvit_lightning.models.specialized_layers import TokenLayerNorm, _PrefixParameters


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` convolution: ``[B, 3, H, W] -> [B, H/p * W/p, D]``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4:
            raise ValueError(f"expected images of shape [B, C, H, W], got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not divisible by the patch size {self.patch_size}")
        return self.proj(images).flatten(2).transpose(1, 2)  # [B, N, D]


_ROPE_DEFAULTS = dict(
    rope_base=100.0, rope_min_period=None, rope_max_period=None, rope_normalize_coords="separate",
    rope_shift_coords=None, rope_jitter_coords=None, rope_rescale_coords=None, rope_dtype="fp32",
)  # fmt: skip


class VisionTransformer(nn.Module):
    """ViT backbone whose blocks follow a :class:`Specialization` (``"vanilla"`` by default)."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        num_registers: int = 0,
        specialization: str | Mapping[str, Any] | Specialization | None = "vanilla",
        drop_path_rate: float = 0.0,
        drop_path_uniform: bool = True,
        stochastic_depth: Literal["dinov2", "per_sample"] = "dinov2",
        layerscale_init: float | None = 1e-5,
        interpolate_offset: float = 0.1,
        interpolate_antialias: bool = False,
        activation_checkpointing: bool = False,
        position_encoding: Literal["learned", "rope"] = "learned",
        ffn_layer: str = "mlp",
        norm_eps: float = 1e-6,
        mask_k_bias: bool = False,
        rope_base: float | None = 100.0,
        rope_min_period: float | None = None,
        rope_max_period: float | None = None,
        rope_normalize_coords: Literal["separate", "min", "max"] = "separate",
        rope_shift_coords: float | None = None,
        rope_jitter_coords: float | None = None,
        rope_rescale_coords: float | None = None,
        rope_dtype: Literal["fp32", "bf16", "fp16"] = "fp32",
    ) -> None:
        """DINOv2's arguments, then DINOv3's (``position_encoding`` onwards; see ``dinov3.py`` for its sizes).

        ``position_encoding``: ``"learned"`` (DINOv2: ``pos_embed``, interpolated to the input's grid)
        or ``"rope"`` (DINOv3: rotary, ``rope_*`` arguments as DINOv3's ``RopePositionEmbedding``:
        periods from ``rope_base`` or ``rope_min_period``..``rope_max_period``; the ``*_coords``
        augmentations apply in training only). ``ffn_layer``: ``"mlp"`` (GELU) or ``"swiglu"``,
        ``"swiglu32"``, ``"swiglu64"``, ``"swiglu128"`` (hidden ``2/3 * mlp_ratio * D`` rounded up to
        8, 32, ... ). ``norm_eps``: every LayerNorm's. ``mask_k_bias``: DINOv3's masked key bias.
        """
        super().__init__()
        if position_encoding not in ("learned", "rope"):
            raise ConfigError(
                f"position_encoding must be 'learned' (DINOv2) or 'rope' (DINOv3), got {position_encoding!r}"
            )
        if ffn_layer not in FFN_LAYERS:
            raise ConfigError(f"ffn_layer must be one of {list(FFN_LAYERS)}, got {ffn_layer!r}")
        if not norm_eps > 0:
            raise ConfigError(f"norm_eps must be > 0 (DINOv2: 1e-6, DINOv3: 1e-5), got {norm_eps}")
        rope_options = dict(
            rope_base=rope_base, rope_min_period=rope_min_period, rope_max_period=rope_max_period,
            rope_normalize_coords=rope_normalize_coords, rope_shift_coords=rope_shift_coords,
            rope_jitter_coords=rope_jitter_coords, rope_rescale_coords=rope_rescale_coords, rope_dtype=rope_dtype,
        )  # fmt: skip
        given = {k: v for k, v in rope_options.items() if v != _ROPE_DEFAULTS[k]}
        if position_encoding == "learned" and given:
            raise ConfigError(
                f"{sorted(given)} set for a learned position embedding; they need position_encoding='rope'"
            )
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        if num_registers < 0:
            raise ValueError(f"num_registers must be >= 0, got {num_registers}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if not 0.0 <= interpolate_offset < 1.0:
            raise ValueError(f"interpolate_offset must be in [0, 1) (DINOv2: 0.1, reg4: 0), got {interpolate_offset}")
        if stochastic_depth not in ("dinov2", "per_sample"):
            raise ValueError(f"stochastic_depth must be 'dinov2' or 'per_sample', got {stochastic_depth!r}")
        self.spec = Specialization.parse(specialization)
        self.spec.blocks(depth)  # validates block indices against this depth
        self.config = dict(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            num_registers=num_registers, specialization=self.spec.to_string(),
            drop_path_rate=drop_path_rate, drop_path_uniform=drop_path_uniform, stochastic_depth=stochastic_depth,
            layerscale_init=layerscale_init, interpolate_offset=interpolate_offset,
            interpolate_antialias=interpolate_antialias, activation_checkpointing=activation_checkpointing,
            position_encoding=position_encoding, ffn_layer=ffn_layer, norm_eps=norm_eps, mask_k_bias=mask_k_bias,
        )  # fmt: skip
        if position_encoding == "rope":
            self.config.update(rope_options)
        self.embed_dim = self.num_features = embed_dim
        self.patch_size = patch_size
        self.depth = depth
        self.num_registers = num_registers
        self.num_prefix_tokens = 1 + num_registers  # tokens before the patches in the sequence
        # How many leading tokens take the prefix parameters: [CLS] and the registers, or [CLS] alone.
        self.num_prefix_path_tokens = 1 + (num_registers if self.spec.registers_path == "cls" else 0)
        # What the specialized layers are told: None when the whole prefix group takes the prefix path.
        routed = self.num_prefix_path_tokens < self.num_prefix_tokens
        prefix_path_tokens = self.num_prefix_path_tokens if routed else None
        self.interpolate_offset = interpolate_offset
        self.interpolate_antialias = interpolate_antialias
        # Recompute each block's activations in the backward pass instead of storing them.
        self.activation_checkpointing = activation_checkpointing

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_registers, embed_dim)) if num_registers else None
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.pos_embed: nn.Parameter | None = None  # RoPE: no key in the state dict
        self.rope_embed: RopePositionEmbedding | None = None
        if position_encoding == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        else:
            self.rope_embed = RopePositionEmbedding(
                embed_dim, num_heads, base=rope_base, min_period=rope_min_period, max_period=rope_max_period,
                normalize_coords=rope_normalize_coords, shift_coords=rope_shift_coords,
                jitter_coords=rope_jitter_coords, rescale_coords=rope_rescale_coords, dtype=rope_dtype,
            )  # fmt: skip

        rates = [drop_path_rate] * depth if drop_path_uniform else torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                layerscale_init=layerscale_init,
                drop_path_rate=rates[i],
                # DINOv2 trains through its nested-list path: each branch on a random subset of the batch.
                batch_subset=stochastic_depth == "dinov2",
                specialized=self.spec.for_block(i, depth),
                prefix_path_tokens=prefix_path_tokens,
                ffn_layer=ffn_layer,
                norm_eps=norm_eps,
                mask_k_bias=mask_k_bias,
            )
            for i in range(depth)
        )
        self.norm = TokenLayerNorm(
            embed_dim, specialized=self.spec.final_norm, eps=norm_eps, prefix_path_tokens=prefix_path_tokens
        )
        self.init_weights()

    def init_weights(self) -> None:
        """DINOv2's init, or DINOv3's with RoPE; prefix twins start equal to their shared weights.

        DINOv2 draws [CLS] and the registers from N(0, 1e-6) and ``pos_embed`` from a truncated
        N(0, 0.02); DINOv3 draws [CLS] and the storage tokens from N(0, 0.02). Both: zero mask
        token, linears truncated N(0, 0.02) with zero biases (``TokenLinear``).
        """
        token_std = 0.02 if self.rope_embed is not None else 1e-6
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.rope_embed is not None:
            self.rope_embed.reset_parameters()
        nn.init.normal_(self.cls_token, std=token_std)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=token_std)
        nn.init.zeros_(self.mask_token)
        for module in self.modules():
            if isinstance(module, _PrefixParameters):
                module.copy_shared_to_prefix()

    # ------------------------------------------------------------------ tokens
    def interpolate_pos_encoding(self, num_patches_h: int, num_patches_w: int, dtype: torch.dtype) -> Tensor:
        """Positional embedding for a ``num_patches_h x num_patches_w`` grid: ``[1, 1 + h*w, D]``."""
        if self.pos_embed is None:
            raise ConfigError("this backbone encodes positions with RoPE (position_encoding='rope'): no pos_embed")
        stored = self.pos_embed.shape[1] - 1
        side = int(math.sqrt(stored))
        if num_patches_h * num_patches_w == stored and num_patches_h == num_patches_w:
            return self.pos_embed.to(dtype)
        class_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = patch_pos.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)  # [1, D, M, M]
        if self.interpolate_offset:
            # DINOv2 resizes by a scale factor nudged by an offset (DINO v1 issue #8); keep it so
            # that its released weights give the same features at other resolutions.
            scale = ((num_patches_h + self.interpolate_offset) / side, (num_patches_w + self.interpolate_offset) / side)
            grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=self.interpolate_antialias)
        else:
            grid = F.interpolate(
                grid, size=(num_patches_h, num_patches_w), mode="bicubic", antialias=self.interpolate_antialias
            )
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, num_patches_h * num_patches_w, -1)  # [1, h*w, D]
        return torch.cat([class_pos, patch_pos.to(class_pos.dtype)], dim=1).to(dtype)

    def prepare_tokens(self, images: Tensor, masks: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Embed images into the ``(prefix [B, 1 + R, D], patches [B, N, D])`` pair of the blocks.

        ``masks`` (``[B, N]`` bool, True = masked) replaces patch embeddings by ``mask_token``
        before the positional embedding is added (iBOT).
        """
        patches = self.patch_embed(images)  # [B, N, D]; checks the image shape
        batch, _, height, width = images.shape
        if masks is not None:
            if masks.dtype != torch.bool:
                raise ValueError(f"masks must be a bool tensor (True = masked), got {masks.dtype}")
            if masks.shape != patches.shape[:2]:
                raise ValueError(f"masks must have shape {tuple(patches.shape[:2])}, got {tuple(masks.shape)}")
            patches = torch.where(masks.unsqueeze(-1), self.mask_token.to(patches.dtype), patches)
        # The residual stream takes the parameters' dtype: fp32 under autocast with fp32 parameters,
        # as in DINOv2 and DINOv3 (their cat with [CLS] promotes the bf16 conv output), bf16 with
        # FSDP bf16 parameters. Only the conv's output is rounded.
        stream = torch.promote_types(patches.dtype, self.cls_token.dtype)
        if self.pos_embed is None:  # RoPE: positions enter in the attention of every block
            cls = self.cls_token.to(stream).expand(batch, -1, -1)  # [B, 1, D]
            # The conv's [B, D, h, w] output read as [B, N, D] is a transposed view; without the copy
            # here every block would inherit that layout (strided residual adds, a copy in every norm).
            patches = patches.to(stream).contiguous()
        else:
            pos = self.interpolate_pos_encoding(height // self.patch_size, width // self.patch_size, stream)
            cls = (self.cls_token + pos[:, :1]).expand(batch, -1, -1)  # [B, 1, D]
            patches = (patches + pos[:, 1:]).contiguous()  # the same copy, with the position added
        if self.register_tokens is None:
            return cls, patches
        registers = self.register_tokens.to(stream).expand(batch, -1, -1)  # [B, R, D]
        return torch.cat([cls, registers], dim=1), patches  # [B, 1 + R, D], [B, N, D]

    @staticmethod
    def _split_outputs(prefix: Tensor, patches: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(cls [B, D], registers [B, R, D], patches [B, N, D])."""
        return prefix[:, 0], prefix[:, 1:], patches

    def block_ropes(self, images: Tensor) -> Iterator[Rope | None]:
        """Each block's RoPE ``(sin, cos)`` (``[N, head_dim]`` each) for ``images``, in block order; None without RoPE.

        DINOv3 calls its ``rope_embed`` before every block, so in training each block draws its own
        coordinate augmentation (lazily here, in the same order of random draws); otherwise every
        block gets the same rotation, computed once.
        """
        if self.rope_embed is None:
            return itertools.repeat(None, self.depth)
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        if self.rope_embed.training and self.rope_embed.augments:
            return (self.rope_embed(*grid) for _ in range(self.depth))
        return itertools.repeat(self.rope_embed(*grid), self.depth)

    def _run_block(self, block: Block, prefix: Tensor, patches: Tensor, rope: Rope | None) -> tuple[Tensor, Tensor]:
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            # Non-reentrant checkpointing replays the RNG, so drop path draws the same samples (the
            # RoPE augmentation was drawn outside, once).
            return checkpoint(block, prefix, patches, rope, use_reentrant=False)
        return block(prefix, patches, rope)

    # ----------------------------------------------------------------- outputs
    def forward_features(self, images: Tensor, masks: Tensor | None = None) -> dict[str, Tensor | None]:
        """DINOv2's output dict: normed [CLS], registers and patches, the pre-norm tokens, masks.

        (DINOv3 names the normed storage tokens ``x_storage_tokens``; here they are the registers.)
        """
        prefix, patches = self.prepare_tokens(images, masks)
        for block, rope in zip(self.blocks, self.block_ropes(images), strict=True):
            prefix, patches = self._run_block(block, prefix, patches, rope)
        cls, registers, patch_tokens = self._split_outputs(*self.norm(prefix, patches))
        return {
            "x_norm_clstoken": cls,
            "x_norm_regtokens": registers,
            "x_norm_patchtokens": patch_tokens,
            "x_prenorm": torch.cat([prefix, patches], dim=1),  # [B, 1 + R + N, D]
            "masks": masks,
        }

    def forward(self, images: Tensor) -> Tensor:
        """The normed [CLS] token ``[B, D]``: the image feature used for classification."""
        return self.forward_features(images)["x_norm_clstoken"]

    def get_intermediate_layers(
        self,
        images: Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple[Tensor, ...] | tuple[tuple[Tensor, Tensor], ...]:
        """Outputs of the last ``n`` blocks (or of the listed block indices), as in DINOv2.

        Each entry is the patch tokens ``[B, N, D]`` (``reshape``: ``[B, D, H/p, W/p]``), or a
        ``(patches, cls)`` pair with ``return_class_token``. ``norm`` applies the final norm
        (with its prefix path to [CLS] when specialized).
        """
        if isinstance(n, int):
            if not 1 <= n <= self.depth:
                raise ValueError(f"get_intermediate_layers: n={n} last blocks of a {self.depth}-block model")
            wanted = set(range(self.depth - n, self.depth))
        else:
            wanted = set(n)
            if len(wanted) != len(n):
                raise ValueError(f"get_intermediate_layers: block indices {list(n)} repeat an index")
        if not wanted or min(wanted) < 0 or max(wanted) >= self.depth:
            raise ValueError(f"get_intermediate_layers: block indices {sorted(wanted)} not in 0..{self.depth - 1}")
        prefix, patches = self.prepare_tokens(images)
        collected = []
        for index, (block, rope) in enumerate(zip(self.blocks, self.block_ropes(images), strict=True)):
            prefix, patches = self._run_block(block, prefix, patches, rope)
            if index in wanted:
                collected.append(self.norm(prefix, patches) if norm else (prefix, patches))
        outputs = []
        height, width = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        for pair in collected:
            cls, _, patch_tokens = self._split_outputs(*pair)
            if reshape:  # [B, N, D] -> [B, D, h, w]
                patch_tokens = patch_tokens.reshape(images.shape[0], height, width, -1).permute(0, 3, 1, 2).contiguous()
            outputs.append((patch_tokens, cls) if return_class_token else patch_tokens)
        return tuple(outputs)


# Size presets (DINOv2 dims/depths/heads; MLP ratio 4 throughout, giant included).
def _vit(embed_dim: int, depth: int, num_heads: int, patch_size: int, **kwargs: Any) -> VisionTransformer:
    return VisionTransformer(embed_dim=embed_dim, depth=depth, num_heads=num_heads, patch_size=patch_size, **kwargs)


def vit_tiny(patch_size: int = 16, **kwargs: Any) -> VisionTransformer:
    return _vit(192, 12, 3, patch_size, **kwargs)


def vit_small(patch_size: int = 16, **kwargs: Any) -> VisionTransformer:
    return _vit(384, 12, 6, patch_size, **kwargs)


def vit_base(patch_size: int = 16, **kwargs: Any) -> VisionTransformer:
    return _vit(768, 12, 12, patch_size, **kwargs)


def vit_large(patch_size: int = 16, **kwargs: Any) -> VisionTransformer:
    return _vit(1024, 24, 16, patch_size, **kwargs)


def vit_giant(patch_size: int = 16, **kwargs: Any) -> VisionTransformer:
    return _vit(1536, 40, 24, patch_size, **kwargs)


SIZES = {"tiny": vit_tiny, "small": vit_small, "base": vit_base, "large": vit_large, "giant": vit_giant}
