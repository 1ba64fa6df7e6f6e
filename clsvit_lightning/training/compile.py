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


def unfuse_bias_pass():  # noqa: ANN201 (the class exists only once inductor is imported)
    """Inductor pass object; built on demand, since importing inductor takes ~1 s at startup."""
    from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files  # noqa: PLC0415
    from torch._inductor.utils import is_pointwise_use  # noqa: PLC0415

    class UnfuseBiasFromAddmm(CustomGraphPass):
        """Inductor pass: ``addmm(bias, x, w)`` -> ``mm(x, w) + bias`` when only pointwise ops read it.

        On CPU ``addmm`` first copies the broadcast bias into every output row, one extra pass over the
        activations (~5 % of a ViT-S forward). As a pointwise add, the bias fuses into the kernel that
        follows anyway (GELU, LayerScale and the residual add). Inductor does the same on GPUs.
        In a training graph the result may also be saved for the backward (a graph output): the
        fused kernel then writes it beside its own output, still without the separate bias pass.
        """

        def __call__(self, graph: torch.fx.Graph) -> None:
            aten = torch.ops.aten
            for node in list(graph.nodes):
                if (
                    node.target is not aten.addmm.default
                    or node.kwargs.get("beta", 1) != 1
                    or node.kwargs.get("alpha", 1) != 1
                ):
                    continue
                bias, mat1, mat2 = node.args
                bias_value = bias.meta.get("val") if isinstance(bias, torch.fx.Node) else None
                on_cpu = node.meta["val"].device.type == "cpu"  # GPUs: Inductor decides (cuBLAS fuses bias)
                if not on_cpu or bias_value is None or bias_value.ndim != 1:
                    continue
                # Pointwise readers, or the concatenation of q/k/v (a cat of pointwise inputs is one kernel).
                # Saved for the backward (a graph output) is fine beside such a reader; alone, the
                # add would be a kernel of its own with nothing to fuse into.
                readers = [use for use in node.users if use.op != "output"]
                if not readers or not all(is_pointwise_use(use, lambda op: op is aten.cat.default) for use in readers):
                    continue
                with graph.inserting_before(node):
                    product = graph.call_function(aten.mm.default, (mat1, mat2))
                    biased = graph.call_function(aten.add.Tensor, (product, bias))
                product.meta["val"] = biased.meta["val"] = node.meta["val"]
                node.replace_all_uses_with(biased)
                graph.erase_node(node)

        def uuid(self) -> bytes:
            return get_hash_for_files((__file__,))

    return UnfuseBiasFromAddmm()


def compile_blocks(module: nn.Module, **compile_kwargs: Any) -> int:
    """Compile, in place, every transformer :class:`Block` inside ``module``; returns how many.

    ``compile_kwargs`` go to ``torch.compile`` (``mode``, ``fullgraph``, ...). Shapes are static by
    default (``dynamic=False``): a ViT sees two or three token counts (global and local crops), each
    worth its own specialised kernels, rather than one slower dynamic-shape graph.
    """
    options = {"dynamic": False, "fullgraph": True, **compile_kwargs}
    if "mode" not in options:  # torch.compile takes `mode` or `options`, not both
        options["options"] = {"post_grad_custom_post_pass": unfuse_bias_pass(), **options.get("options", {})}
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    blocks = [m for m in module.modules() if isinstance(m, Block)]
    for block in blocks:
        block.compile(**options)
    return len(blocks)
