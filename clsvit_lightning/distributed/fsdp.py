"""FSDP for large backbones (ViT-L, ViT-g) through Lightning's ``FSDPStrategy``: one unit per block.

Why these units: a transformer block is the natural shard. It holds ~12 D^2 parameters (ViT-g:
28 M), so gathering one block at a time bounds the extra memory to one block's full weights, and
overlapping the next block's all-gather with the current block's compute hides the communication.
The DINO heads are units too (65 536 prototypes x 256 = 17 M parameters in the last layer alone).
What is left (patch embedding, [CLS], registers, positional embedding, final norms) is a few MB and
stays in the root unit, gathered for the whole step: the tasks call ``forward_features`` rather than
``forward``, and FSDP only gathers a unit around its module's ``forward``.

Use it from YAML as the trainer's strategy::

    trainer:
      strategy:
        class_path: clsvit_lightning.distributed.fsdp.BlockFSDPStrategy
        init_args:
          sharding_strategy: FULL_SHARD
          activation_checkpointing: true   # per block, FSDP-aware

or in Python as ``FSDPStrategy(auto_wrap_policy=block_wrap_policy())``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import FSDPStrategy
from torch import Tensor, nn
from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy
from torch.distributed.fsdp.wrap import CustomPolicy

from clsvit_lightning.models.block import Block
from clsvit_lightning.models.dino_head import DINOHead

WRAPPED_MODULES: tuple[type[nn.Module], ...] = (Block, DINOHead)


def block_wrap_policy(sharding_strategy: ShardingStrategy | str | None = None) -> CustomPolicy:
    """FSDP auto-wrap policy: every transformer :class:`Block` and every :class:`DINOHead` is a unit.

    With ``sharding_strategy``, those units use it whatever the root unit uses.
    """
    overrides = {"sharding_strategy": _sharding(sharding_strategy)} if sharding_strategy is not None else {}

    def unit_kwargs(module: nn.Module) -> bool | dict:
        return (overrides or True) if isinstance(module, WRAPPED_MODULES) else False

    return CustomPolicy(unit_kwargs)


def _sharding(value: ShardingStrategy | str) -> ShardingStrategy:
    return value if isinstance(value, ShardingStrategy) else ShardingStrategy[value.upper()]


class BlockFSDPStrategy(FSDPStrategy):
    """Lightning's ``FSDPStrategy`` with the per-block wrap policy, configurable from YAML.

    ``activation_checkpointing`` recomputes each block in the backward pass through FSDP's own
    checkpoint wrapper (use it instead of the backbone's ``activation_checkpointing`` under FSDP).
    Other keyword arguments go to ``FSDPStrategy`` (``sharding_strategy``, ``cpu_offload``,
    ``mixed_precision``, ``state_dict_type``, ...).
    """

    def __init__(
        self, sharding_strategy: str = "FULL_SHARD", activation_checkpointing: bool = False, **kwargs: Any
    ) -> None:
        # Blocks and heads are sharded; the root unit (a few MB) is replicated (NO_SHARD). Then a
        # student parameter and its EMA-teacher twin are sharded alike on every rank, so the
        # teacher update stays a per-parameter lerp of local shards (in a sharded root, the student's
        # and the teacher's leftovers would fall on different ranks).
        # `is None` rather than setdefault: the CLI passes every FSDPStrategy argument, unset ones as None.
        if kwargs.get("auto_wrap_policy") is None:
            kwargs["auto_wrap_policy"] = block_wrap_policy(sharding_strategy)
        if activation_checkpointing and kwargs.get("activation_checkpointing_policy") is None:
            kwargs["activation_checkpointing_policy"] = {Block}
        super().__init__(sharding_strategy="NO_SHARD", **kwargs)

    def _setup_model(self, model: nn.Module) -> nn.Module:
        if self.root_device.type != "cpu" or any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            return super()._setup_model(model)
        # Lightning passes `device_id=root_device.index`, None on CPU, and FSDP then refuses to start
        # ("FSDP needs a non-CPU accelerator device"). Naming the CPU lets gloo runs (tests) work;
        # the parent then only adds activation checkpointing, its policy left out as already applied.
        wrapped = FullyShardedDataParallel(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=self.root_device,
            **self.kwargs,
        )
        kwargs, self.kwargs = self.kwargs, {k: v for k, v in self.kwargs.items() if k != "auto_wrap_policy"}
        try:
            return super()._setup_model(wrapped)
        finally:
            self.kwargs = kwargs


def sharded_parameter_ids(root: nn.Module) -> set[int]:
    """``id``s of the original parameters that FSDP shards (their ``.grad`` is this rank's slice)."""
    ids: set[int] = set()
    for unit in FullyShardedDataParallel.fsdp_modules(root):
        handle = unit._handle
        if handle is not None and handle.uses_sharded_strategy:
            ids.update(id(p) for p in handle.flat_param._params or ())
    return ids


@torch.no_grad()
def clip_grad_norm_(parameters: Iterable[nn.Parameter], max_norm: float, sharded_ids: set[int]) -> Tensor:
    """``nn.utils.clip_grad_norm_`` over parameters of which some are FSDP shards.

    ``nn.utils.clip_grad_norm_`` on this rank's shards sees only part of the gradient: each rank
    would clip with its own norm. Here the squared norms of the sharded gradients are summed over
    ranks, those of the replicated ones counted once, so every rank scales by the global norm::

        norm = sqrt(all_reduce_sum(sum_sharded |g|^2) + sum_replicated |g|^2)
        g *= min(1, max_norm / (norm + 1e-6))
    """
    sharded, replicated = [], []
    for param in parameters:
        if param.grad is not None:
            (sharded if id(param) in sharded_ids else replicated).append(param.grad)
    device = (sharded + replicated)[0].device if sharded or replicated else torch.device("cpu")

    def squared_norm(grads: list[Tensor]) -> Tensor:
        norms = torch._foreach_norm([g.float() for g in grads]) if grads else []
        return torch.stack(norms).square().sum() if norms else torch.zeros((), device=device)

    sharded_squared = squared_norm(sharded)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sharded_squared)
    norm = (sharded_squared + squared_norm(replicated)).sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(sharded + replicated, scale)
    return norm
