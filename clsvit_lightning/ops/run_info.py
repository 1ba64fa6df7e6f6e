"""What a run is about, read off its LightningModule: backbone size, specialization, overhead, FLOPs.

Loggers use it for run names and tags, the results file for the sweep's overhead column.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from clsvit_lightning.models.accounting import count_flops_per_image, count_parameters
from clsvit_lightning.models.specialization import PRESETS, Specialization
from clsvit_lightning.models.vision_transformer import VisionTransformer

# embed_dim -> size name of the presets in clsvit_lightning.models (DINOv2 widths).
SIZE_BY_WIDTH = {192: "tiny", 384: "small", 768: "base", 1024: "large", 1536: "giant"}

# Where the modules of this project keep the backbone that gets evaluated (teacher first).
BACKBONE_ATTRIBUTES = ("teacher_backbone", "backbone")


def find_backbone(module: nn.Module) -> VisionTransformer | None:
    """The evaluated ViT of a task module (the teacher for self-distillation), or None."""
    for attribute in BACKBONE_ATTRIBUTES:
        candidate = getattr(module, attribute, None)
        if isinstance(candidate, VisionTransformer):
            return candidate
    return next((m for m in module.modules() if isinstance(m, VisionTransformer)), None)


def specialization_label(backbone: VisionTransformer) -> str:
    """The preset name when the spec is one (``paper``), else the explicit spec string."""
    for name, preset in PRESETS.items():
        if name != "none" and _same(backbone.spec, preset, backbone.depth):
            return name
    return backbone.spec.to_string(depth=backbone.depth)


def _same(a: Specialization, b: Specialization, depth: int) -> bool:
    return (a.blocks(depth), a.final_norm, a.registers_path) == (b.blocks(depth), b.final_norm, b.registers_path)


def describe_backbone(backbone: VisionTransformer) -> dict[str, Any]:
    """Name, tags and summary numbers: ``vit_small_p16-paper-reg4``, overhead fraction, GFLOPs per image."""
    config = backbone.config
    size = SIZE_BY_WIDTH.get(config["embed_dim"], f"d{config['embed_dim']}x{config['depth']}")
    model = f"vit_{size}_p{config['patch_size']}"
    spec = specialization_label(backbone)
    registers = int(config.get("num_registers", 0))
    name = f"{model}-{spec}" + (f"-reg{registers}" if registers else "")
    count = count_parameters(backbone)
    return {
        "name": name,
        "tags": [model, f"size:{size}", f"spec:{spec}", f"registers:{registers}"],
        "summary": {
            "backbone/params_total": float(count.total),
            "backbone/params_overhead": float(count.overhead),
            "backbone/params_overhead_pct": 100.0 * count.overhead,
            "backbone/gflops_per_image": count_flops_per_image(backbone) / 1e9,
        },
    }
