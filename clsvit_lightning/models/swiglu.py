"""SwiGLU feed-forward layers: DINOv3's (``w1``, ``w2``, ``w3``) and the backbone's token-pair SwiGLU
(:class:`TokenSwiGLU`), specializable like ``TokenMlp``; DINOv2's packed layout (``w12``, ``w3``) is
read and written by :func:`unpack_w12` / :func:`pack_w12`.

``w3(silu(w1 x) * w2 x)`` (Shazeer 2020, "GLU Variants Improve Transformer"). Two input matrices
instead of one, so to keep the parameter count of an MLP of hidden size ``h``, the hidden size is
``2h/3``, rounded up to a multiple of ``align_to`` (``dinov3/layers/ffn_layers.py: SwiGLUFFN``;
DINOv2's ``SwiGLUFFNFused`` computes the same with 8). ``h`` is ``int(embed_dim * ffn_ratio)``.
The published sizes:

=============  =========  =========  ===========  =================  ==============
model          embed_dim  ffn_ratio  ffn_layer    h                  hidden
=============  =========  =========  ===========  =================  ==============
DINOv3 S+      384        6          swiglu       2304               1536
DINOv3 L+      1024       6          swiglu       6144               4096
DINOv3 H+      1280       6          swiglu       7680               5120
DINOv3 7B      4096       3          swiglu64     12288              8192
DINOv2 g       1536       4          swiglufused  6144               4096
=============  =========  =========  ===========  =================  ==============
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.specialized_layers import TokenLinear, TokenPair

# DINOv3's `ffn_layer` names for SwiGLU and the multiple each rounds the hidden size up to.
SWIGLU_ALIGN = {"swiglu": 8, "swiglu32": 32, "swiglu64": 64, "swiglu128": 128}


def swiglu_hidden_features(hidden_features: int, align_to: int = 8) -> int:
    """``int(hidden_features * 2 / 3)`` rounded up to a multiple of ``align_to``."""
    if align_to < 1:
        raise ConfigError(f"SwiGLU align_to must be >= 1, got {align_to}")
    reduced = int(hidden_features * 2 / 3)
    return reduced + (-reduced % align_to)


def swiglu_align(ffn_layer: str) -> int:
    """The ``align_to`` of a DINOv3 ``ffn_layer`` name (``"swiglu"``: 8, ``"swiglu64"``: 64, ...)."""
    if ffn_layer not in SWIGLU_ALIGN:
        raise ConfigError(f"unknown SwiGLU ffn_layer {ffn_layer!r}; expected one of {sorted(SWIGLU_ALIGN)}")
    return SWIGLU_ALIGN[ffn_layer]


def _linear(in_features: int, out_features: int, bias: bool) -> nn.Linear:
    linear = nn.Linear(in_features, out_features, bias=bias)
    nn.init.trunc_normal_(linear.weight, std=0.02)  # DINOv2/DINOv3 init of every Linear
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return linear


class SwiGLUFFN(nn.Module):
    """DINOv3's SwiGLU: ``w3(silu(w1(x)) * w2(x))`` with separate ``w1``, ``w2`` (``[hidden, D]``) and ``w3``.

    ``hidden_features`` is the MLP-equivalent size ``h``; the layer's own hidden size is
    :func:`swiglu_hidden_features` ``(h, align_to)`` (``self.hidden_features``).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int | None = None,
        bias: bool = True,
        align_to: int = 8,
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        self.hidden_features = swiglu_hidden_features(hidden_features, align_to)
        self.w1 = _linear(in_features, self.hidden_features, bias)
        self.w2 = _linear(in_features, self.hidden_features, bias)
        self.w3 = _linear(self.hidden_features, out_features, bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(self.hidden(x))

    def hidden(self, x: Tensor) -> Tensor:
        """``silu(w1(x)) * w2(x)``: the input of ``w3`` ``[..., hidden]``."""
        return F.silu(self.w1(x)) * self.w2(x)


class TokenSwiGLU(nn.Module):
    """:class:`SwiGLUFFN` on the ``(prefix, patches)`` pair; specialized: ``w1``, ``w2``, ``w3`` get prefix twins.

    The state-dict keys are DINOv3's (``mlp.w1.weight``, ...), and the specialization component is
    ``mlp``, as for the GELU MLP.
    """

    def __init__(
        self,
        dim: int,
        hidden_features: int,
        align_to: int = 8,
        bias: bool = True,
        specialized: bool = False,
        prefix_path_tokens: int | None = None,
    ) -> None:
        super().__init__()
        self.hidden_features = swiglu_hidden_features(hidden_features, align_to)
        split = {"specialized": specialized, "prefix_path_tokens": prefix_path_tokens, "bias": bias}
        self.w1 = TokenLinear(dim, self.hidden_features, **split)
        self.w2 = TokenLinear(dim, self.hidden_features, **split)
        self.w3 = TokenLinear(self.hidden_features, dim, **split)

    def forward(self, prefix: Tensor, patches: Tensor) -> TokenPair:
        """``w3(silu(w1(x)) * w2(x))`` on both groups."""
        return self.w3(*self.hidden(prefix, patches))

    def hidden(self, prefix: Tensor, patches: Tensor) -> TokenPair:
        """``silu(w1(x)) * w2(x)`` of both groups ``[B, T, hidden]``: the input of ``w3``."""
        gate_prefix, gate_patches = self.w1(prefix, patches)
        value_prefix, value_patches = self.w2(prefix, patches)
        return F.silu(gate_prefix) * value_prefix, F.silu(gate_patches) * value_patches


_PACKED = re.compile(r"^(.*\.)?w12\.(weight|bias)$")
_GATE_OR_VALUE = re.compile(r"^(.*\.)?w([12])\.(weight|bias)$")


def unpack_w12(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """DINOv2's packed SwiGLU -> DINOv3's layout: every ``*w12.*`` becomes ``*w1.*`` (its first half,
    the silu gate) and ``*w2.*`` (the second half); other keys are kept. A new dict.

    DINOv2's ``SwiGLUFFNFused`` computes ``x1, x2 = w12(x).chunk(2); w3(silu(x1) * x2)``: the same
    function as :class:`SwiGLUFFN` with ``w12 = cat([w1, w2])``. transformers (``mlp.weights_in``)
    and timm (``SwiGLUPacked``'s ``mlp.fc1``, gate first) pack the same way.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        match = _PACKED.match(key)
        if match is None:
            out[key] = value
            continue
        prefix, param = match.group(1) or "", match.group(2)
        if value.shape[0] % 2:
            raise ConfigError(f"{key}: a packed SwiGLU input of {value.shape[0]} rows; expected an even number")
        out[f"{prefix}w1.{param}"], out[f"{prefix}w2.{param}"] = value.chunk(2, dim=0)
    return out


def is_packed_fc1(fc1: Tensor | None, fc2: Tensor | None) -> bool:
    """Whether an FFN's ``fc1``/``fc2`` weights are timm's ``SwiGLUPacked`` (DINOv2's giant): ``fc1``
    [2 h, D] packs the gate over the value and ``fc2`` [D, h] reads half of it; a GELU MLP's ``fc2``
    reads all of ``fc1``'s output."""
    return fc1 is not None and fc2 is not None and fc1.shape[0] == 2 * fc2.shape[-1]


def pack_w12(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`unpack_w12`: every ``*w1.*`` / ``*w2.*`` pair becomes ``*w12.*``."""
    out: dict[str, Tensor] = {}
    halves: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        match = _GATE_OR_VALUE.match(key)
        if match is None:
            out[key] = value
        else:
            halves.setdefault((match.group(1) or "", match.group(3)), {})[match.group(2)] = value
    for (prefix, param), parts in halves.items():
        if set(parts) != {"1", "2"}:
            raise ConfigError(f"{prefix}w1/w2.{param}: only one of the two SwiGLU input matrices is present")
        out[f"{prefix}w12.{param}"] = torch.cat([parts["1"], parts["2"]], dim=0)
    return out
