"""Backbone weights in other layouts: reading them (``sources``) and writing them (``export``).

One module per foreign layout: ``hf_dinov2`` (transformers' ``Dinov2Model`` and
``Dinov2WithRegistersModel``), ``dinov3`` (DINOv3's official layout), ``hf_dinov3`` (transformers'
``DINOv3ViTModel`` configuration), ``timm_vit`` (timm's DINOv2 ``VisionTransformer``), and
``safetensors_file`` (the file format, read and written with torch alone). Imports without
Lightning, transformers, timm or safetensors.
"""

from clsvit_lightning.models.formats.export import FORMATS, SpecializedExportError, export_backbone
from clsvit_lightning.models.formats.safetensors_file import read_safetensors, write_safetensors
from clsvit_lightning.models.formats.sources import BackboneSource, read_backbone, read_weights

__all__ = [
    "FORMATS",
    "BackboneSource",
    "SpecializedExportError",
    "export_backbone",
    "read_backbone",
    "read_safetensors",
    "read_weights",
    "write_safetensors",
]
