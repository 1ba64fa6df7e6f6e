"""The backbone: a Vision Transformer with layer specialization (DINOv2's and DINOv3's). Imports without Lightning."""

from clsvit_lightning.models.accounting import (
    ParameterCount,
    count_flops_per_image,
    count_parameters,
    count_training_flops_per_image,
)
from clsvit_lightning.models.checkpoint import CheckpointMismatchError, load_pretrained
from clsvit_lightning.models.dinov3 import (
    DINOV3_SIZES,
    dinov3_backbone_config,
    dinov3_vit,
    dinov3_vit7b16,
    dinov3_vitb16,
    dinov3_vith16plus,
    dinov3_vitl16,
    dinov3_vitl16plus,
    dinov3_vits16,
    dinov3_vits16plus,
)
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
    "DINOV3_SIZES",
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
    "dinov3_backbone_config",
    "dinov3_vit",
    "dinov3_vit7b16",
    "dinov3_vitb16",
    "dinov3_vith16plus",
    "dinov3_vitl16",
    "dinov3_vitl16plus",
    "dinov3_vits16",
    "dinov3_vits16plus",
    "load_pretrained",
    "vit_base",
    "vit_giant",
    "vit_large",
    "vit_small",
    "vit_tiny",
]
