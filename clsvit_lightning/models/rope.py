"""DINOv3's 2D rotary position embedding (RoPE) for the patch tokens.

As ``dinov3/layers/rope_position_encoding.py`` and ``SelfAttention.apply_rope`` in
``dinov3/layers/attention.py`` compute it (DINOv3 paper, Siméoni et al. 2025, section 3):

* Axial, no learned weights. A head of ``head_dim`` channels holds ``head_dim / 2`` rotation pairs;
  the first ``head_dim / 4`` pairs turn with the row coordinate ``y``, the last ``head_dim / 4``
  with the column coordinate ``x``, at the periods ``base ** (4 i / head_dim)`` (``i < head_dim / 4``;
  the first period is 1), or geometrically spaced from ``min_period`` to ``max_period``.
* Coordinates are patch centres mapped to [-1, 1]: ``y_i = 2 (i + 0.5) / H - 1`` and
  ``x_j = 2 (j + 0.5) / W - 1`` (``"separate"``: each axis by its own length; ``"min"``/``"max"``:
  both by ``min(H, W)``/``max(H, W)``, so that the longer/shorter side leaves [-1, 1]).
* Angles ``2 pi * coord / period`` are laid out ``[y-angles | x-angles]`` and tiled twice, and
  :func:`rope_apply` rotates channel ``c`` with channel ``c + head_dim / 2`` (the "rotate half"
  convention): ``x * cos + rotate_half(x) * sin``.
* Only the last ``H * W`` tokens of ``q`` and ``k`` (the patches) are rotated; [CLS] and the storage
  tokens before them are not, so their logits carry no position.

Training-time coordinate augmentations (off in eval mode, drawn in this order, as DINOv3 draws them):
``shift_coords`` adds one ``U(-s, s)`` per axis; ``jitter_coords`` multiplies each axis by its own
log-uniform factor in ``[1/j, j]``; ``rescale_coords`` multiplies both axes by one log-uniform factor
in ``[1/r, r]`` (all released DINOv3 backbones were trained with ``rescale_coords=2``). DINOv3 calls
the module once per block, so every block draws its own augmentation.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from clsvit_lightning.errors import ConfigError

NormalizeCoords = Literal["separate", "min", "max"]
NORMALIZE_COORDS = ("separate", "min", "max")
# DINOv3's `pos_embed_rope_dtype` names; the released backbones run RoPE in fp32.
ROPE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def rope_periods(
    head_dim: int,
    base: float | None = 100.0,
    min_period: float | None = None,
    max_period: float | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The rotation periods ``[head_dim / 4]``: from ``base``, or from ``min_period`` to ``max_period``."""
    if head_dim % 4:
        raise ConfigError(f"RoPE needs a head dimension divisible by 4 (2 axes x sin/cos pairs), got {head_dim}")
    by_periods = min_period is not None or max_period is not None
    if by_periods and (min_period is None or max_period is None):
        raise ConfigError(f"RoPE: give both min_period and max_period, got {min_period=} and {max_period=}")
    if base is None and not by_periods:
        raise ConfigError("RoPE needs its periods: give `base` (DINOv3: 100) or `min_period` and `max_period`")
    if base is not None and by_periods:
        raise ConfigError(
            f"RoPE: give either `base` or `min_period`+`max_period`, not both (got {base=}, {min_period=}, "
            f"{max_period=}); set base=None to use the periods"
        )
    quarter = head_dim // 4
    if base is not None:
        # The same expression (and dtype) as DINOv3's `_init_weights`, so the buffer matches bit for bit.
        return base ** (2 * torch.arange(quarter, device=device, dtype=dtype) / (head_dim // 2))
    ratio = max_period / min_period
    exponents = torch.linspace(0, 1, quarter, device=device, dtype=dtype)  # [head_dim / 4] in [0, 1]
    return ratio**exponents / ratio * max_period  # geometric, from min_period to max_period


def patch_coordinates(
    height: int,
    width: int,
    normalize_coords: NormalizeCoords = "separate",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Patch centres of a ``height x width`` grid, row-major: ``[H * W, 2]`` with columns ``(y, x)``."""
    if normalize_coords == "separate":
        scale_h, scale_w = height, width
    elif normalize_coords == "min":
        scale_h = scale_w = min(height, width)
    elif normalize_coords == "max":
        scale_h = scale_w = max(height, width)
    else:
        raise ConfigError(f"RoPE normalize_coords must be one of {NORMALIZE_COORDS}, got {normalize_coords!r}")
    coords_h = torch.arange(0.5, height, device=device, dtype=dtype) / scale_h  # [H] in [0, 1]
    coords_w = torch.arange(0.5, width, device=device, dtype=dtype) / scale_w  # [W]
    coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1)  # [H, W, 2]
    return 2.0 * coords.flatten(0, 1) - 1.0  # [H * W, 2], [0, 1] -> [-1, 1]


def augment_coordinates(
    coords: Tensor,
    shift: float | None = None,
    jitter: float | None = None,
    rescale: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DINOv3's training-time coordinate augmentations of ``coords [..., 2]`` (see the module docstring).

    Random numbers come from ``generator`` (else the global RNG), drawn in ``coords``'s dtype.
    """
    options = {"dtype": coords.dtype, "device": coords.device}
    if shift is not None:
        coords = coords + torch.empty(2, **options).uniform_(-shift, shift, generator=generator)  # [2]: per axis
    if jitter is not None:
        log_jitter = math.log(jitter)
        coords = coords * torch.empty(2, **options).uniform_(-log_jitter, log_jitter, generator=generator).exp()
    if rescale is not None:
        log_rescale = math.log(rescale)
        coords = coords * torch.empty(1, **options).uniform_(-log_rescale, log_rescale, generator=generator).exp()
    return coords


def rope_angles(coords: Tensor, periods: Tensor) -> Tensor:
    """Rotation angles ``[..., head_dim]`` of ``coords [..., 2]``: ``[y-angles | x-angles]`` tiled twice."""
    angles = 2 * math.pi * coords.unsqueeze(-1) / periods  # [..., 2, head_dim / 4]
    return angles.flatten(-2).tile(2)  # [..., head_dim / 2] -> [..., head_dim]


def rope_rotate_half(x: Tensor) -> Tensor:
    """``[x1 | x2] -> [-x2 | x1]`` on the last dimension."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def rope_apply(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate each pair ``(x[c], x[c + head_dim / 2])`` by its angle: ``x * cos + rotate_half(x) * sin``."""
    return x * cos + rope_rotate_half(x) * sin


def rope_patch_tokens(q: Tensor, k: Tensor, sin: Tensor, cos: Tensor) -> tuple[Tensor, Tensor]:
    """RoPE on the last ``H * W`` tokens of ``q`` and ``k`` (``[B, heads, T, head_dim]``), the prefix untouched.

    ``sin``/``cos`` (``[H * W, head_dim]``) set the math dtype, as in DINOv3's ``apply_rope``: q and k
    are rotated in the rope dtype (fp32 for the released models) and cast back to their own.
    """
    num_patches = sin.shape[-2]
    num_prefix = q.shape[-2] - num_patches
    if num_prefix < 0 or k.shape[-2] != q.shape[-2]:
        raise ValueError(f"RoPE for {num_patches} patch tokens does not fit q/k of {q.shape[-2]}/{k.shape[-2]} tokens")

    def rotate(x: Tensor) -> Tensor:
        prefix, patches = x.split([num_prefix, num_patches], dim=-2)  # [B, h, P, d], [B, h, H*W, d]
        patches = rope_apply(patches.to(sin.dtype), sin, cos).to(x.dtype)
        return torch.cat([prefix, patches], dim=-2)  # [B, h, P + H*W, d]

    return rotate(q), rotate(k)


class RopePositionEmbedding(nn.Module):
    """DINOv3's ``RopePositionEmbedding``: ``forward(H, W) -> (sin, cos)``, each ``[H * W, head_dim]``.

    The ``periods`` buffer is persistent (DINOv3 state dicts hold it as ``rope_embed.periods``), so
    that copying a student's state dict into its teacher carries it. ``dtype`` is the dtype RoPE is
    computed in, whatever dtype the module is later cast to (DINOv3: ``pos_embed_rope_dtype``).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        base: float | None = 100.0,
        min_period: float | None = None,
        max_period: float | None = None,
        normalize_coords: NormalizeCoords = "separate",
        shift_coords: float | None = None,
        jitter_coords: float | None = None,
        rescale_coords: float | None = None,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ConfigError(f"RoPE: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if (embed_dim // num_heads) % 4:
            raise ConfigError(
                f"RoPE needs a head dimension divisible by 4 (2 axes x rotation pairs): embed_dim {embed_dim} / "
                f"num_heads {num_heads} = {embed_dim // num_heads}"
            )
        if normalize_coords not in NORMALIZE_COORDS:
            raise ConfigError(f"RoPE normalize_coords must be one of {NORMALIZE_COORDS}, got {normalize_coords!r}")
        if shift_coords is not None and not shift_coords >= 0:
            raise ConfigError(f"RoPE shift_coords must be >= 0 (a half-width), got {shift_coords}")
        for name, factor in (("jitter_coords", jitter_coords), ("rescale_coords", rescale_coords)):
            if factor is not None and not factor >= 1:
                raise ConfigError(f"RoPE {name} must be >= 1 (factors in [1/{name}, {name}]), got {factor}")
        if isinstance(dtype, str):
            if dtype not in ROPE_DTYPES:
                raise ConfigError(f"RoPE dtype must be one of {sorted(ROPE_DTYPES)} or a torch.dtype, got {dtype!r}")
            dtype = ROPE_DTYPES[dtype]
        self.head_dim = embed_dim // num_heads
        self.base, self.min_period, self.max_period = base, min_period, max_period
        self.normalize_coords = normalize_coords
        self.shift_coords, self.jitter_coords, self.rescale_coords = shift_coords, jitter_coords, rescale_coords
        self.dtype = dtype
        self.register_buffer("periods", rope_periods(self.head_dim, base, min_period, max_period, dtype=dtype))

    @property
    def augments(self) -> bool:
        """Whether training draws coordinate augmentations (any of shift, jitter, rescale set)."""
        return any(value is not None for value in (self.shift_coords, self.jitter_coords, self.rescale_coords))

    def reset_parameters(self) -> None:
        """Recompute ``periods`` (after a meta-device build, or to undo a load)."""
        periods = rope_periods(self.head_dim, self.base, self.min_period, self.max_period, dtype=self.dtype)
        with torch.no_grad():
            self.periods.copy_(periods.to(self.periods.device))

    def forward(self, height: int, width: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(sin, cos)`` for a grid of ``height x width`` patches; augmented in training mode only."""
        coords = patch_coordinates(height, width, self.normalize_coords, self.dtype, self.periods.device)  # [H*W, 2]
        if self.training:
            coords = augment_coordinates(
                coords, self.shift_coords, self.jitter_coords, self.rescale_coords, generator=generator
            )
        angles = rope_angles(coords, self.periods.to(self.dtype))  # [H * W, head_dim]
        return torch.sin(angles), torch.cos(angles)

    def extra_repr(self) -> str:
        periods = f"base={self.base}" if self.base is not None else f"periods={self.min_period}..{self.max_period}"
        augment = {"shift": self.shift_coords, "jitter": self.jitter_coords, "rescale": self.rescale_coords}
        augment_text = "".join(f", {k}_coords={v}" for k, v in augment.items() if v is not None)
        return f"head_dim={self.head_dim}, {periods}, normalize_coords={self.normalize_coords!r}{augment_text}"
