"""torch.hub entry points: ``torch.hub.load(<this checkout>, "vit_small", source="local", weights=...)``.

Every entry point builds the backbone (``clsvit_lightning.models``, pure PyTorch) and, with
``weights=`` (a local file or folder: nothing is downloaded), loads it with ``load_pretrained``:
this project's exports and checkpoints, DINOv2, timm and transformers weights. A specialized model
given vanilla weights starts as the vanilla model (its [CLS]/register parameters are copies).

* ``vit_small``, ``vit_base``, ``vit_large``, ``vit_giant``: this package's presets (patch 16,
  224 px unless given);
* ``dinov2_vits14``, ``dinov2_vitb14``, ``dinov2_vitl14``, ``dinov2_vitg14`` and their ``_reg``
  variants: the geometry of DINOv2's released models (patch 14, 518 px grid; 4 registers and
  their position-embedding resize for ``_reg``); ``dinov2_vitg14`` has DINOv2's SwiGLU FFN
  (``ffn_layer="swiglu"``), which reads the released giant's packed ``w12``;
* ``dinov3_vits16``, ``dinov3_vits16plus``, ``dinov3_vitb16``, ``dinov3_vitl16``,
  ``dinov3_vitl16plus``, ``dinov3_vith16plus``, ``dinov3_vit7b16``: DINOv3's released
  architectures (RoPE, 4 storage tokens, patch 16); a specialized one needs ``final_norm`` to
  take DINOv3's untied [CLS] norm (the ``paper`` preset has it);
* ``from_pretrained``: the backbone of any file or run folder, architecture included.
"""

dependencies = ["torch"]

from clsvit_lightning import models as _models  # noqa: E402 (torch.hub reads `dependencies` first)

# DINOv2's hub models: 518 px grid (37 x 37 patches of 14); its reg4 models resize the position
# embedding without offset and with antialias.
_DINOV2_GEOMETRY = dict(patch_size=14, img_size=518)
_DINOV2_REGISTERS = dict(interpolate_offset=0.0, interpolate_antialias=True)


def _build(preset, weights, specialization, num_registers, **kwargs):
    model = getattr(_models, preset)(specialization=specialization, num_registers=num_registers, **kwargs)
    if weights is not None:
        _models.load_pretrained(model, weights)
    return model.eval()


def vit_small(*, weights=None, specialization="vanilla", num_registers=0, **kwargs):
    """ViT-S (384 wide, 12 blocks, 6 heads); ``kwargs`` go to ``VisionTransformer``."""
    return _build("vit_small", weights, specialization, num_registers, **kwargs)


def vit_base(*, weights=None, specialization="vanilla", num_registers=0, **kwargs):
    """ViT-B (768 wide, 12 blocks, 12 heads); ``kwargs`` go to ``VisionTransformer``."""
    return _build("vit_base", weights, specialization, num_registers, **kwargs)


def vit_large(*, weights=None, specialization="vanilla", num_registers=0, **kwargs):
    """ViT-L (1024 wide, 24 blocks, 16 heads); ``kwargs`` go to ``VisionTransformer``."""
    return _build("vit_large", weights, specialization, num_registers, **kwargs)


def vit_giant(*, weights=None, specialization="vanilla", num_registers=0, **kwargs):
    """ViT-g (1536 wide, 40 blocks, 24 heads, MLP FFN); ``kwargs`` go to ``VisionTransformer``."""
    return _build("vit_giant", weights, specialization, num_registers, **kwargs)


def _dinov2(preset, registers):
    ffn = {"ffn_layer": "swiglu"} if preset == "vit_giant" else {}  # DINOv2's giant: SwiGLU, hidden 4096

    def entry(*, weights=None, specialization="vanilla", num_registers=4 if registers else 0, **kwargs):
        geometry = {**_DINOV2_GEOMETRY, **(_DINOV2_REGISTERS if registers else {}), **ffn, **kwargs}
        return _build(preset, weights, specialization, num_registers, **geometry)

    size = preset.removeprefix("vit_")
    arguments = "".join(f", {k}={v!r}" for k, v in ffn.items())
    entry.__doc__ = (
        f"DINOv2's ViT-{size[0].upper()}/14{' with registers' if registers else ''}: "
        f"``{preset}(patch_size=14, img_size=518{', num_registers=4' if registers else ''}{arguments})``."
    )
    return entry


dinov2_vits14 = _dinov2("vit_small", registers=False)
dinov2_vitb14 = _dinov2("vit_base", registers=False)
dinov2_vitl14 = _dinov2("vit_large", registers=False)
dinov2_vitg14 = _dinov2("vit_giant", registers=False)
dinov2_vits14_reg = _dinov2("vit_small", registers=True)
dinov2_vitb14_reg = _dinov2("vit_base", registers=True)
dinov2_vitl14_reg = _dinov2("vit_large", registers=True)
dinov2_vitg14_reg = _dinov2("vit_giant", registers=True)


def _dinov3(preset):
    def entry(*, weights=None, specialization="vanilla", **kwargs):
        model = getattr(_models, preset)(specialization=specialization, **kwargs)
        if weights is not None:
            _models.load_pretrained(model, weights)
        return model.eval()

    entry.__doc__ = f"DINOv3's ``{preset}`` (``clsvit_lightning.models.{preset}``); ``kwargs`` go to it."
    return entry


dinov3_vits16 = _dinov3("dinov3_vits16")
dinov3_vits16plus = _dinov3("dinov3_vits16plus")
dinov3_vitb16 = _dinov3("dinov3_vitb16")
dinov3_vitl16 = _dinov3("dinov3_vitl16")
dinov3_vitl16plus = _dinov3("dinov3_vitl16plus")
dinov3_vith16plus = _dinov3("dinov3_vith16plus")
dinov3_vit7b16 = _dinov3("dinov3_vit7b16")


def from_pretrained(path, which=None, **overrides):
    """The backbone stored at ``path`` with its architecture (``clsvit_lightning.models.from_pretrained``)."""
    return _models.from_pretrained(path, which=which, **overrides)
