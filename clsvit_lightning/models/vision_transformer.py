"""Vision Transformer with [CLS], registers and layer specialization (DINOv2 layout and keys).

Token sequence: ``[CLS, R registers, N patches]``; the registers get no positional embedding.
Inside the blocks the sequence travels as a pair ``(prefix [B, 1 + R, D], patches [B, N, D])``
(see ``specialized_layers``). With ``registers_path="cls"`` (default) the registers take the [CLS]
parameters of specialized components; with ``registers_path="patch"`` they take the patch ones.
State-dict keys are DINOv2's (``cls_token``, ``register_tokens``, ``pos_embed``, ``mask_token``,
``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,...}``, ``norm``), with
``prefix_*`` parameters beside the shared ones where a component is specialized.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from clsvit_lightning.models.block import Block
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
    ) -> None:
        super().__init__()
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
        )  # fmt: skip
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
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))

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
            )
            for i in range(depth)
        )
        self.norm = TokenLayerNorm(embed_dim, specialized=self.spec.final_norm, prefix_path_tokens=prefix_path_tokens)
        self.init_weights()

    def init_weights(self) -> None:
        """DINOv2 init; prefix twins start equal to their shared weights (same function as vanilla)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        nn.init.zeros_(self.mask_token)
        for module in self.modules():
            if isinstance(module, _PrefixParameters):
                module.copy_shared_to_prefix()

    # ------------------------------------------------------------------ tokens
    def interpolate_pos_encoding(self, num_patches_h: int, num_patches_w: int, dtype: torch.dtype) -> Tensor:
        """Positional embedding for a ``num_patches_h x num_patches_w`` grid: ``[1, 1 + h*w, D]``."""
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
        # as in DINOv2 (its cat with [CLS] promotes the bf16 conv output), bf16 with FSDP bf16
        # parameters. Only the conv's output is rounded.
        stream = torch.promote_types(patches.dtype, self.pos_embed.dtype)
        pos = self.interpolate_pos_encoding(height // self.patch_size, width // self.patch_size, stream)
        cls = (self.cls_token + pos[:, :1]).expand(batch, -1, -1)  # [B, 1, D]
        # The conv's [B, D, h, w] output read as [B, N, D] is a transposed view; without the copy here
        # every block would inherit that layout (strided residual adds, a copy in every norm).
        patches = (patches + pos[:, 1:]).contiguous()
        if self.register_tokens is None:
            return cls, patches
        registers = self.register_tokens.expand(batch, -1, -1)  # [B, R, D]
        return torch.cat([cls, registers], dim=1), patches  # [B, 1 + R, D], [B, N, D]

    @staticmethod
    def _split_outputs(prefix: Tensor, patches: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(cls [B, D], registers [B, R, D], patches [B, N, D])."""
        return prefix[:, 0], prefix[:, 1:], patches

    def _run_block(self, block: Block, prefix: Tensor, patches: Tensor) -> tuple[Tensor, Tensor]:
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            # Non-reentrant checkpointing replays the RNG, so drop path draws the same samples.
            return checkpoint(block, prefix, patches, use_reentrant=False)
        return block(prefix, patches)

    # ----------------------------------------------------------------- outputs
    def forward_features(self, images: Tensor, masks: Tensor | None = None) -> dict[str, Tensor | None]:
        """DINOv2's output dict: normed [CLS], registers and patches, the pre-norm tokens, masks."""
        prefix, patches = self.prepare_tokens(images, masks)
        for block in self.blocks:
            prefix, patches = self._run_block(block, prefix, patches)
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
        for index, block in enumerate(self.blocks):
            prefix, patches = self._run_block(block, prefix, patches)
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
