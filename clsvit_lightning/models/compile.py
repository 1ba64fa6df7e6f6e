"""``torch.compile`` for the backbone, block by block, in place (state-dict keys unchanged).

Why per block ("regional compilation") rather than the whole model:

* the tasks call ``backbone.forward_features``, not ``backbone(...)``, and ``nn.Module.compile``
  only compiles ``__call__``; the blocks, in contrast, are always reached through ``__call__``;
* every block of a given structure shares one compiled graph (parameters are graph inputs), so
  compile time does not grow with depth: ViT-S and ViT-g compile the same handful of graphs;
* everything worth fusing lives inside a block: norms, the prefix/patch split, GELU, residuals,
  LayerScale; ``prepare_tokens`` and the final norm are a few element-wise ops per image;
* it composes with per-block FSDP units and per-block activation checkpointing.

``Module.compile`` keeps the module where it is (no ``_orig_mod.`` wrapper), so checkpoints written
with and without compilation load into each other.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clsvit_lightning.models.block import Block

# Distinct graphs a backbone asks for: block structure (specialized qkv or not) x token count
# (global and local crops) x train/eval (student and teacher) x grad mode. Dynamo's default limit
# of 8 per code object would silently send the rest back to eager.
RECOMPILE_LIMIT = 64


def compile_blocks(module: nn.Module, **compile_kwargs: Any) -> int:
    """Compile, in place, every transformer :class:`Block` inside ``module``; returns how many.

    ``compile_kwargs`` go to ``torch.compile`` (``mode``, ``fullgraph``, ...). Shapes are static by
    default (``dynamic=False``): a ViT sees two or three token counts (global and local crops), each
    worth its own specialised kernels, rather than one slower dynamic-shape graph.
    """
    options = {"dynamic": False, "fullgraph": True, **compile_kwargs}
    # `recompile_limit` was `cache_size_limit` before torch 2.7.
    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), RECOMPILE_LIMIT))
    blocks = [m for m in module.modules() if isinstance(m, Block)]
    for block in blocks:
        block.compile(**options)
    return len(blocks)
