"""This backbone <-> timm's DINOv2 ``VisionTransformer``.

Two checks. Always: against ``fixtures/timm_dinov2_reference.safetensors``, written by timm itself
(``fixtures/make_timm_reference.py``: its weights, an input and its features for three tiny models,
the giant's packed SwiGLU among them),
this backbone reads timm's weights into the same function and writes them back bit for bit. Where
timm is installed: the ``create_model`` call that ``clsvit export --format timm`` prints loads the
file into timm's model with the same features (run in a subprocess, see ``timm_features.py``).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models import VisionTransformer, export_backbone, load_pretrained, vit_small
from clsvit_lightning.models.formats import read_safetensors
from clsvit_lightning.models.formats.timm_vit import timm_model_arguments
from tests.interop.backbones import features, randomize

FIXTURE = Path(__file__).with_name("fixtures") / "timm_dinov2_reference.safetensors"
HELPER = Path(__file__).with_name("timm_features.py")


def reference(variant):
    tensors, metadata = read_safetensors(FIXTURE)
    call = json.loads(metadata["variants"])[variant]
    prefix = f"{variant}.weights."
    weights = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    return call, weights, tensors[f"{variant}.images"], tensors[f"{variant}.features"]


@pytest.mark.parametrize("variant", ["plain", "reg4", "giant"])
def test_timm_weights_give_timms_features_and_export_back_identically(tmp_path, variant):
    call, weights, images, timm_features = reference(variant)
    registers = 4 if variant == "reg4" else 0
    kwargs = call["kwargs"]
    model = VisionTransformer(
        img_size=kwargs["img_size"], patch_size=14, embed_dim=kwargs["embed_dim"], depth=kwargs["depth"],
        num_heads=kwargs["num_heads"], num_registers=registers, ffn_layer="swiglu" if variant == "giant" else "mlp",
    ).eval()  # fmt: skip
    load_pretrained(model, weights)
    torch.testing.assert_close(features(model, images), timm_features, atol=1e-5, rtol=0)

    info = export_backbone(model, tmp_path / "timm.safetensors", "timm")
    exported, _ = read_safetensors(tmp_path / "timm.safetensors")
    assert set(exported) == set(weights)
    for key, value in weights.items():
        assert torch.equal(exported[key], value), key
    assert timm_model_arguments(model.config) == (call["model_name"], kwargs)
    assert info["load"].startswith(f"timm.create_model({call['model_name']!r}, pretrained=True")


def test_the_printed_create_model_call_loads_into_timm_with_the_same_features(tmp_path):
    images = torch.randn(2, 3, 42, 42)
    torch.save(images, tmp_path / "images.pt")
    cases = {
        "small": randomize(vit_small(patch_size=14, img_size=42)),  # vit_small_patch14_dinov2 as it is
        "small_reg4_depth3": randomize(
            VisionTransformer(img_size=42, patch_size=14, embed_dim=384, depth=3, num_heads=6, num_registers=4), seed=1
        ),
        # A size timm has no name for, 2 registers, no LayerScale: create_model arguments say so.
        "tiny_reg2": randomize(VisionTransformer(img_size=42, patch_size=14, embed_dim=64, depth=2, num_heads=2,
                                                 num_registers=2, layerscale_init=None), seed=2),
        # DINOv2's giant shrunk: its SwiGLU becomes timm's SwiGLUPacked in vit_giant_patch14_reg4_dinov2.
        "giant_reg4": randomize(VisionTransformer(img_size=42, patch_size=14, embed_dim=48, depth=2, num_heads=2,
                                                  num_registers=4, ffn_layer="swiglu"), seed=3),
    }  # fmt: skip
    jobs = []
    for name, model in cases.items():
        suffix = ".safetensors" if name == "small_reg4_depth3" else ".pth"
        file = tmp_path / f"{name}{suffix}"
        export_backbone(model, file, "timm")
        model_name, kwargs = timm_model_arguments(model.config)
        images_file, out = str(tmp_path / "images.pt"), str(tmp_path / f"{name}.out.pt")
        jobs.append({"model_name": model_name, "kwargs": kwargs, "file": str(file), "images": images_file, "out": out})
    assert [job["model_name"] for job in jobs] == [
        "vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2", "vit_small_patch14_reg4_dinov2",
        "vit_giant_patch14_reg4_dinov2",
    ]  # fmt: skip
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    done = subprocess.run([sys.executable, str(HELPER), str(tmp_path / "jobs.json")], capture_output=True, text=True)
    if done.returncode == 3:
        pytest.skip("timm is not installed (the fixture test above checks the layout without it)")
    assert done.returncode == 0, done.stderr[-3000:]
    for name, model in cases.items():
        timm_features = torch.load(tmp_path / f"{name}.out.pt", weights_only=True)
        torch.testing.assert_close(timm_features, features(model, images), atol=1e-5, rtol=0, msg=name)


def test_a_swiglu_backbone_timms_giant_cannot_build_is_refused_naming_the_widths():
    # embed_dim 64, mlp_ratio 4: packed w1, w2 of 2 x 176 rows; timm's giant recipe gives int(64 * 5.33334) = 341.
    model = VisionTransformer(img_size=28, patch_size=14, embed_dim=64, depth=1, num_heads=2, ffn_layer="swiglu")
    with pytest.raises(ConfigError, match=r"in its giant only.*= 341 rows; this backbone's packed w1, w2 have 352"):
        timm_model_arguments(model.config)
