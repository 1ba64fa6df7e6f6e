"""``hubconf.py``: the checkout as a ``torch.hub`` repository, with local weights only."""

import importlib.util
from pathlib import Path

import pytest
import torch

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models import dinov3_vits16, export_backbone, from_pretrained, vit_small
from tests.interop.backbones import features, randomize

REPO = Path(__file__).resolve().parents[2]
IMAGES = torch.randn(1, 3, 42, 42, generator=torch.Generator().manual_seed(0))


def hub(entry, **kwargs):
    return torch.hub.load(str(REPO), entry, source="local", **kwargs)


def test_entry_points_and_dependencies():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    assert hubconf.dependencies == ["torch"]
    entries = {name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_")}
    sizes = ("s", "b", "l", "g")
    assert entries == {"vit_small", "vit_base", "vit_large", "vit_giant", "from_pretrained"} | {
        f"dinov2_vit{size}14{suffix}" for size in sizes for suffix in ("", "_reg")
    } | {
        f"dinov3_{name}" for name in ("vits16", "vits16plus", "vitb16", "vitl16", "vitl16plus", "vith16plus", "vit7b16")
    }


def test_dinov3_entries_build_the_release_and_load_local_weights(tmp_path):
    with torch.device("meta"):  # the 7B without allocating it
        big = hub("dinov3_vit7b16")
    assert (big.config["embed_dim"], big.config["depth"], big.config["patch_size"]) == (4096, 40, 16)
    assert big.config["position_encoding"] == "rope" and big.config["num_registers"] == 4
    trained = randomize(dinov3_vits16(img_size=32))
    export_backbone(trained, tmp_path / "vits16.pth")
    images = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(1))  # RoPE: any grid
    loaded = hub("dinov3_vits16", weights=str(tmp_path / "vits16.pth"), img_size=32)
    assert torch.equal(features(loaded, images), features(trained.eval(), images))
    specialized = hub("dinov3_vits16", weights=str(tmp_path / "vits16.pth"), specialization="paper", img_size=32)
    assert torch.equal(features(specialized, images), features(trained.eval(), images))


def test_dinov2_named_entries_have_dinov2s_geometry_and_take_a_specialization():
    with torch.device("meta"):  # ViT-g without allocating it
        giant = hub("dinov2_vitg14_reg", specialization="paper")
    assert (giant.config["embed_dim"], giant.config["depth"], giant.config["patch_size"]) == (1536, 40, 14)
    assert giant.config["img_size"] == 518 and giant.config["num_registers"] == 4
    assert giant.config["interpolate_offset"] == 0.0 and giant.config["interpolate_antialias"]
    assert giant.config["specialization"] != "vanilla" and not giant.training
    with torch.device("meta"):
        base = hub("dinov2_vitb14", num_registers=2)
    assert base.config["num_registers"] == 2 and base.config["interpolate_offset"] == 0.1


def test_weights_load_from_a_local_file_and_warm_start_a_specialized_model(tmp_path):
    trained = randomize(vit_small(patch_size=14, img_size=42, num_registers=4))
    export_backbone(trained, tmp_path / "vits14_reg.pth")
    loaded = hub("vit_small", weights=str(tmp_path / "vits14_reg.pth"), patch_size=14, img_size=42, num_registers=4)
    assert torch.equal(features(loaded, IMAGES), features(trained, IMAGES))
    # DINOv2-named entry, specialized, warm-started from the vanilla weights: the same function.
    specialized = hub(
        "dinov2_vits14_reg", weights=str(tmp_path / "vits14_reg.pth"), specialization="paper", img_size=42
    )
    assert torch.equal(features(specialized, IMAGES), features(trained.eval(), IMAGES))
    stored = hub("from_pretrained", path=str(tmp_path / "vits14_reg.pth"))
    assert stored.config == from_pretrained(tmp_path / "vits14_reg.pth").config


def test_weights_of_another_size_are_refused_naming_the_file(tmp_path):
    trained = randomize(vit_small(patch_size=14, img_size=42))
    export_backbone(trained, tmp_path / "vits14.pth")
    with torch.device("meta"), pytest.raises(ConfigError, match=r"vits14\.pth does not match the model"):
        hub("vit_base", weights=str(tmp_path / "vits14.pth"), patch_size=14, img_size=42)
