"""The backbone: a Vision Transformer with layer specialization. Imports without Lightning."""

from clsvit_lightning.models.accounting import (
    ParameterCount,
    count_flops_per_image,
    count_parameters,
    count_training_flops_per_image,
)
from clsvit_lightning.models.checkpoint import CheckpointMismatchError, load_pretrained
from clsvit_lightning.models.formats import FORMATS as EXPORT_FORMATS
from clsvit_lightning.models.formats import export_backbone
from clsvit_lightning.models.from_pretrained import from_pretrained
from clsvit_lightning.models.specialization import COMPONENTS, PRESETS, Specialization
from clsvit_lightning.models.vision_transformer import (
    SIZES,
    VisionTransformer,
    vit_base,
    vit_giant,
    vit_large,
    vit_small,
    vit_tiny,
)

__all__ = [
    "COMPONENTS",
    "PRESETS",
    "SIZES",
    "CheckpointMismatchError",
    "EXPORT_FORMATS",
    "ParameterCount",
    "Specialization",
    "VisionTransformer",
    "count_flops_per_image",
    "count_parameters",
    "export_backbone",
    "from_pretrained",
    "count_training_flops_per_image",
    "load_pretrained",
    "vit_base",
    "vit_giant",
    "vit_large",
    "vit_small",
    "vit_tiny",
]
