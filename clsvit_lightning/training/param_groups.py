"""Optimizer parameter groups as per-parameter multipliers, fused afterwards.

As ``dinov2/utils/param_groups.py`` (docs/recipe.md#optimizer-and-parameter-groups).

What a parameter is comes from the module that owns it, never from a name substring:
* no weight decay: parameters listed in the owning module's ``no_weight_decay`` set (token ops,
  LayerScale), any parameter of a ``nn.LayerNorm``, biases of ``nn.Linear``/``nn.Conv2d``;
* last layer (frozen at the start by a zero lr): parameters of a ``WeightNormPrototypes``;
* layer-wise lr decay (backbone only): ``decay ** (depth + 1 - layer_id)`` with ``layer_id`` 0 for
  the embeddings, ``i + 1`` for block ``i`` and ``depth + 1`` (multiplier 1) for the final norm;
* patch embedding: an extra lr multiplier (0.2 in DINOv2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from clsvit_lightning.models.dino_head import WeightNormPrototypes
from clsvit_lightning.models.vision_transformer import VisionTransformer


@dataclass(frozen=True)
class ParamRole:
    lr_multiplier: float = 1.0
    wd_multiplier: float = 1.0
    is_last_layer: bool = False


def _is_no_weight_decay(module: nn.Module, local_name: str) -> bool:
    if local_name in getattr(module, "no_weight_decay", ()):
        return True
    # _NormBase: every BatchNorm and InstanceNorm, SyncBatchNorm included (Lightning converts the
    # dense heads' BatchNorm to it under DDP with `sync_batchnorm`, before configure_optimizers).
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)):
        return True
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and local_name == "bias"


def _backbone_layer_ids(backbone: VisionTransformer) -> dict[int, int]:
    """id(parameter) -> layer id for layer-wise lr decay."""
    layer_ids = {id(p): backbone.depth + 1 for p in backbone.parameters()}
    embeddings = [backbone.cls_token, backbone.pos_embed, backbone.mask_token, *backbone.patch_embed.parameters()]
    if backbone.register_tokens is not None:
        embeddings.append(backbone.register_tokens)
    layer_ids.update({id(p): 0 for p in embeddings})
    for index, block in enumerate(backbone.blocks):
        layer_ids.update({id(p): index + 1 for p in block.parameters()})
    return layer_ids


def parameter_roles(
    modules: Mapping[str, nn.Module], layerwise_decay: float = 1.0, patch_embed_lr_multiplier: float = 1.0
) -> dict[str, tuple[nn.Parameter, ParamRole]]:
    """``"<module>.<param name>" -> (parameter, role)`` for every trainable parameter."""
    roles: dict[str, tuple[nn.Parameter, ParamRole]] = {}
    for prefix, root in modules.items():
        layer_ids = _backbone_layer_ids(root) if isinstance(root, VisionTransformer) else {}
        patch_embed = {id(p) for p in root.patch_embed.parameters()} if isinstance(root, VisionTransformer) else set()
        for module_name, module in root.named_modules():
            for local_name, parameter in module.named_parameters(recurse=False):
                if not parameter.requires_grad:
                    continue
                lr_multiplier = 1.0
                if id(parameter) in layer_ids:
                    lr_multiplier *= layerwise_decay ** (root.depth + 1 - layer_ids[id(parameter)])
                if id(parameter) in patch_embed:
                    lr_multiplier *= patch_embed_lr_multiplier
                role = ParamRole(
                    lr_multiplier=lr_multiplier,
                    wd_multiplier=0.0 if _is_no_weight_decay(module, local_name) else 1.0,
                    is_last_layer=isinstance(module, WeightNormPrototypes),
                )
                full_name = ".".join(filter(None, (prefix, module_name, local_name)))
                roles[full_name] = (parameter, role)
    return roles


def build_param_groups(
    modules: Mapping[str, nn.Module], layerwise_decay: float = 1.0, patch_embed_lr_multiplier: float = 1.0
) -> list[dict]:
    """Fuse parameters with the same role into one optimizer group (fewer groups, faster steps)."""
    fused: dict[ParamRole, dict] = {}
    for name, (parameter, role) in parameter_roles(modules, layerwise_decay, patch_embed_lr_multiplier).items():
        group = fused.setdefault(
            role,
            {
                "params": [],
                "names": [],
                "lr_multiplier": role.lr_multiplier,
                "wd_multiplier": role.wd_multiplier,
                "is_last_layer": role.is_last_layer,
            },
        )
        group["params"].append(parameter)
        group["names"].append(name)
    return list(fused.values())
