"""The specialized layers: LayerNorm, Linear, LayerScale and MLP over the two token groups.

This is the one mechanism behind layer specialization: [CLS] gets its own LayerNorm here
(:class:`TokenLayerNorm` with ``specialized=True``), and likewise its own linear maps and
LayerScale. Which blocks build which layer specialized is the :class:`Specialization`'s choice
(``specialization.py``); a :class:`Block` asks it for each component.

The residual stream of the backbone is carried as a pair of tensors:

* ``prefix``:  ``[B, 1 + R, D]``, the [CLS] token and the register tokens;
* ``patches``: ``[B, N, D]``, the patch tokens.

Every op here maps that pair to a pair. Built with ``specialized=False`` it applies one set of
parameters to both groups, exactly like the vanilla op. Built with ``specialized=True`` it adds a
``prefix_<name>`` copy of each parameter and applies it to the prefix group, while the patch group
keeps the vanilla parameter names (``blocks.0.norm1.weight``), so vanilla checkpoints load as they
are and the missing prefix copies are filled from the shared weights (warm start). When the
registers are routed with the patches (built with ``prefix_path_tokens=1``), only [CLS] takes the
prefix parameters; the registers keep the shared ones.

Each token goes through exactly one path, so FLOPs are those of the vanilla model. The groups are
never packed into one tensor around a per-token op, so the split costs no copy either: the one
concatenation per block is the one attention needs to let all tokens see each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TokenPair = tuple[Tensor, Tensor]


class _PrefixParameters:
    """Mixin: with ``specialized=True``, a ``prefix_<name>`` twin for each name in ``_split``.

    ``prefix_path_tokens``: the leading tokens of the prefix group that take the prefix parameters
    (None: all of them).
    """

    _split: tuple[str, ...] = ()
    specialized: bool = False
    prefix_path_tokens: int | None = None

    def _add_prefix_parameters(self, prefix_path_tokens: int | None) -> None:
        self.specialized = True
        self.prefix_path_tokens = prefix_path_tokens
        for name in self._split:
            shared = getattr(self, name)
            if shared is not None:
                self.register_parameter(f"prefix_{name}", nn.Parameter(shared.detach().clone()))
            else:
                self.register_parameter(f"prefix_{name}", None)

    def prefix_parameter(self, name: str) -> Tensor | None:
        """The parameter the prefix tokens use: their own twin, or the shared one."""
        return getattr(self, f"prefix_{name}" if self.specialized else name)

    def _apply_to_prefix(self, prefix: Tensor, op) -> Tensor:  # noqa: ANN001
        """``op(tensor, use_prefix_parameters)`` on the prefix group, honouring the register route."""
        out = op(prefix, self.specialized)
        routed = self.prefix_path_tokens
        if self.specialized and routed is not None and routed < prefix.shape[1]:
            # Registers on the patch path take the shared parameters. Both results cover the whole
            # (tiny) group so that each row comes from a kernel call of the same shape as in the
            # vanilla model: warm-started outputs then match it bit for bit.
            out = torch.cat([out[:, :routed], op(prefix, False)[:, routed:]], dim=1)
        return out

    def copy_shared_to_prefix(self) -> None:
        """Warm start: make the prefix path compute exactly what the shared path computes."""
        if self.specialized:
            with torch.no_grad():
                for name in self._split:
                    if getattr(self, name) is not None:
                        getattr(self, f"prefix_{name}").copy_(getattr(self, name))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # A vanilla checkpoint has no prefix_* keys: warm-start them from the shared weights, so
        # that `load_state_dict(vanilla_state_dict)` works (strict) on a specialized model.
        if self.specialized:
            for name in self._split:
                if f"{prefix}prefix_{name}" not in state_dict and f"{prefix}{name}" in state_dict:
                    # A copy: with `load_state_dict(..., assign=True)` the same tensor would become
                    # both parameters, and the two paths would share (and jointly train) one storage.
                    state_dict[f"{prefix}prefix_{name}"] = state_dict[f"{prefix}{name}"].clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class TokenLayerNorm(_PrefixParameters, nn.LayerNorm):
    """LayerNorm over each token group; specialized: the prefix tokens get their own affine."""

    _split = ("weight", "bias")
    no_weight_decay = frozenset({"weight", "bias", "prefix_weight", "prefix_bias"})

    def __init__(
        self, dim: int, specialized: bool = False, eps: float = 1e-6, prefix_path_tokens: int | None = None
    ) -> None:
        super().__init__(dim, eps=eps)
        if specialized:
            self._add_prefix_parameters(prefix_path_tokens)

    def forward(self, prefix: Tensor, patches: Tensor) -> TokenPair:  # type: ignore[override]
        return self.forward_prefix(prefix), super().forward(patches)

    def forward_prefix(self, prefix: Tensor) -> Tensor:
        return self._apply_to_prefix(prefix, self._norm)

    def _norm(self, tokens: Tensor, use_prefix: bool) -> Tensor:
        weight, bias = (self.prefix_weight, self.prefix_bias) if use_prefix else (self.weight, self.bias)
        return F.layer_norm(tokens, self.normalized_shape, weight, bias, self.eps)


class TokenLinear(_PrefixParameters, nn.Linear):
    """Linear layer over each token group; specialized: the prefix tokens get their own matrix.

    ``bias_mask`` (``[out_features]``, DINOv3's ``LinearKMaskedBias``): a persistent buffer that
    multiplies the bias (and the prefix bias) in every forward; DINOv3's ``qkv`` holds 0 on the key
    third, so the key bias stays out of the function however it trains.
    """

    _split = ("weight", "bias")
    no_weight_decay = frozenset({"bias", "prefix_bias"})
    bias_mask: Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        specialized: bool = False,
        prefix_path_tokens: int | None = None,
        bias_mask: Tensor | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        nn.init.trunc_normal_(self.weight, std=0.02)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if bias_mask is not None and (self.bias is None or bias_mask.shape != (out_features,)):
            raise ValueError(f"bias_mask needs a bias of {out_features} features, got {tuple(bias_mask.shape)}")
        self.register_buffer("bias_mask", bias_mask)  # None: no key in the state dict
        if specialized:
            self._add_prefix_parameters(prefix_path_tokens)

    def forward(self, prefix: Tensor, patches: Tensor) -> TokenPair:  # type: ignore[override]
        return self.forward_prefix(prefix), self._linear(patches, False)

    def forward_prefix(self, prefix: Tensor) -> Tensor:
        return self._apply_to_prefix(prefix, self._linear)

    def _linear(self, tokens: Tensor, use_prefix: bool) -> Tensor:
        weight, bias = (self.prefix_weight, self.prefix_bias) if use_prefix else (self.weight, self.bias)
        if self.bias_mask is not None:
            bias = bias * self.bias_mask.to(bias.dtype)  # as DINOv3 computes it, in every forward
        return F.linear(tokens, weight, bias)


class LayerScale(_PrefixParameters, nn.Module):
    """Per-channel residual scaling ``gamma * x`` (Touvron et al., CaiT); specializable."""

    _split = ("gamma",)
    no_weight_decay = frozenset({"gamma", "prefix_gamma"})

    def __init__(
        self, dim: int, init_value: float, specialized: bool = False, prefix_path_tokens: int | None = None
    ) -> None:
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))
        if specialized:
            self._add_prefix_parameters(prefix_path_tokens)

    def forward(self, prefix: Tensor, patches: Tensor) -> TokenPair:
        return self.forward_prefix(prefix), patches * self.gamma

    def forward_prefix(self, prefix: Tensor) -> Tensor:
        return self._apply_to_prefix(prefix, self._scale)

    def _scale(self, tokens: Tensor, use_prefix: bool) -> Tensor:
        return tokens * (self.prefix_gamma if use_prefix else self.gamma)


class TokenIdentity(nn.Module):
    """Stands in for LayerScale when it is disabled (``layerscale_init=None``)."""

    def forward(self, prefix: Tensor, patches: Tensor) -> TokenPair:
        return prefix, patches


class TokenMlp(nn.Module):
    """``fc1 -> GELU -> fc2`` on each token group; specialized: both linears get prefix twins."""

    def __init__(
        self, dim: int, hidden_dim: int, specialized: bool = False, prefix_path_tokens: int | None = None
    ) -> None:
        super().__init__()
        self.fc1 = TokenLinear(dim, hidden_dim, specialized=specialized, prefix_path_tokens=prefix_path_tokens)
        self.act = nn.GELU()
        self.fc2 = TokenLinear(hidden_dim, dim, specialized=specialized, prefix_path_tokens=prefix_path_tokens)

    def forward(self, prefix: Tensor, patches: Tensor) -> TokenPair:
        """``fc2(GELU(fc1(x)))`` on both groups."""
        return self.fc2(*self.hidden(prefix, patches))

    def hidden(self, prefix: Tensor, patches: Tensor) -> TokenPair:
        """``GELU(fc1(x))`` of both groups: the input of ``fc2``."""
        if self._gelu_in_place_applies(patches):
            # CPU inference: the GELU overwrites fc1's fresh output instead of allocating a second
            # [tokens, 4D] tensor. Identical values; the forward is 3 % faster than with the
            # out-of-place GELU and than oneDNN's fused linear + GELU (experiments/benchmarks/backbone.py).
            hidden = torch.ops.aten.gelu_(
                F.linear(patches, self.fc1.weight, self.fc1.bias), approximate=self.act.approximate
            )
            return self.act(self.fc1.forward_prefix(prefix)), hidden
        prefix, patches = self.fc1(prefix, patches)
        return self.act(prefix), self.act(patches)

    def _gelu_in_place_applies(self, tokens: Tensor) -> bool:
        """Eager CPU inference (GELU's backward needs its input) outside autocast, plain modules.

        The path calls ``F.linear`` and ``gelu_`` directly, so it steps aside where that would
        bypass something: forward hooks on ``fc1`` or ``act``, or a replaced ``fc1``/``act``
        (an adapter, another activation).
        """
        return (
            not torch.compiler.is_compiling()  # first: dynamo must not trace the checks below; inductor fuses anyway
            and not torch.is_grad_enabled()
            and tokens.device.type == "cpu"
            and type(self.fc1) is TokenLinear
            and type(self.act) is nn.GELU
            and not any(m._forward_hooks or m._forward_pre_hooks for m in (self.fc1, self.act))
            and not autocast_enabled(tokens)
        )


def autocast_enabled(tensor: Tensor) -> bool:
    """Whether autocast is on for the tensor's device type (False for devices without autocast, e.g. meta)."""
    try:
        return torch.is_autocast_enabled(tensor.device.type)
    except RuntimeError:  # "unknown device type for autocast"
        return False


def drop_path(prefix: Tensor, patches: Tensor, rate: float, training: bool) -> TokenPair:
    """Stochastic depth on a residual branch: drop whole samples, the same ones in both groups."""
    if rate == 0.0 or not training:
        return prefix, patches
    keep = 1.0 - rate
    # [B, 1, 1]: one Bernoulli draw per sample, rescaled so the expectation is unchanged.
    mask = prefix.new_empty(prefix.shape[0], 1, 1).bernoulli_(keep).div_(keep)
    return prefix * mask, patches * mask
