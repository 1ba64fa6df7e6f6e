"""DINOv2's giant: a SwiGLU FFN whose two input matrices DINOv2 packs in one (``mlp.w12``).

The released ViT-g/14 is too large for a test; a 64-wide, 2-block model with the giant's FFN
(``ffn_layer="swiglu"``, ``mlp_ratio=4``: hidden ``int(2/3 * 256) = 170``, rounded up to 176) has
every key and shape rule of it (one head: DINOv2 files do not state it, and heads are 64 wide).
Its DINOv2-format weights are drawn here, independently of this package's layers, and the FFN is
checked against DINOv2's ``SwiGLUFFNFused`` formula written out below.
"""

import pytest
import torch
import torch.nn.functional as F

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models import VisionTransformer, export_backbone, from_pretrained, load_pretrained, vit_giant
from clsvit_lightning.models.checkpoint_files import CheckpointMismatchError
from tests.interop.backbones import features, random_backbone
from tests.interop.test_hubconf import hub

GIANT = dict(img_size=42, patch_size=14, embed_dim=64, depth=2, num_heads=1, ffn_layer="swiglu")
IMAGES = torch.randn(2, 3, 42, 42, generator=torch.Generator().manual_seed(0))


def dinov2_giant_state(num_registers=0, seed=0):
    """A random state dict in DINOv2's layout for the shrunk giant (packed ``w12`` [352, 64], ``w3``)."""
    shapes = {
        "cls_token": (1, 1, 64), "pos_embed": (1, 10, 64), "mask_token": (1, 64),
        "patch_embed.proj.weight": (64, 3, 14, 14), "patch_embed.proj.bias": (64,),
        "norm.weight": (64,), "norm.bias": (64,),
    }  # fmt: skip
    if num_registers:
        shapes["register_tokens"] = (1, num_registers, 64)
    for i in range(2):
        shapes |= {
            f"blocks.{i}.norm1.weight": (64,), f"blocks.{i}.norm1.bias": (64,),
            f"blocks.{i}.attn.qkv.weight": (192, 64), f"blocks.{i}.attn.qkv.bias": (192,),
            f"blocks.{i}.attn.proj.weight": (64, 64), f"blocks.{i}.attn.proj.bias": (64,),
            f"blocks.{i}.ls1.gamma": (64,), f"blocks.{i}.norm2.weight": (64,), f"blocks.{i}.norm2.bias": (64,),
            f"blocks.{i}.mlp.w12.weight": (352, 64), f"blocks.{i}.mlp.w12.bias": (352,),
            f"blocks.{i}.mlp.w3.weight": (64, 176), f"blocks.{i}.mlp.w3.bias": (64,),
            f"blocks.{i}.ls2.gamma": (64,),
        }  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=generator)
        state[key] = (
            (0.5 + 0.2 * noise)
            if key.endswith("gamma")
            else (1 + 0.2 * noise)
            if "norm" in key and key.endswith("weight")
            else 0.1 * noise
        )  # noqa: E501
    return state


def dinov2_swiglu(x, state, block):
    """DINOv2's SwiGLUFFNFused: ``x1, x2 = w12(x).chunk(2); w3(silu(x1) * x2)``."""
    x1, x2 = F.linear(x, state[f"{block}.mlp.w12.weight"], state[f"{block}.mlp.w12.bias"]).chunk(2, dim=-1)
    return F.linear(F.silu(x1) * x2, state[f"{block}.mlp.w3.weight"], state[f"{block}.mlp.w3.bias"])


def test_dinov2_giant_weights_load_into_a_swiglu_model_with_dinov2s_ffn():
    state = dinov2_giant_state()
    model = VisionTransformer(**GIANT).eval()
    load_pretrained(model, state)
    x = torch.randn(3, 5, 64)
    ffn = model.blocks[1].mlp
    with torch.no_grad():
        torch.testing.assert_close(ffn(x[:, :1], x[:, 1:])[1], dinov2_swiglu(x[:, 1:], state, "blocks.1"))
    assert torch.equal(model.blocks[0].mlp.w1.weight, state["blocks.0.mlp.w12.weight"][:176])  # the gate half


@pytest.mark.parametrize("num_registers", [0, 4])
def test_a_dinov2_giant_file_is_read_with_its_architecture_and_written_back_identically(tmp_path, num_registers):
    state = dinov2_giant_state(num_registers)
    torch.save(state, tmp_path / "vitg.pth")
    ours = from_pretrained(tmp_path / "vitg.pth")
    assert ours.config["ffn_layer"] == "swiglu" and ours.config["mlp_ratio"] == 4.0
    assert ours.config["num_registers"] == num_registers
    built = VisionTransformer(**{**GIANT, "num_registers": num_registers}).eval()
    load_pretrained(built, state)
    assert torch.equal(features(ours, IMAGES), features(built, IMAGES))
    info = export_backbone(ours, tmp_path / "back.pth", "dinov2")
    assert "ffn_layer='swiglufused'" in info["load"]
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


def test_a_specialized_giant_warm_started_from_dinov2_weights_computes_the_vanilla_function(tmp_path):
    state = dinov2_giant_state(num_registers=4)
    torch.save(state, tmp_path / "vitg_reg.pth")
    vanilla = from_pretrained(tmp_path / "vitg_reg.pth")
    specialized = from_pretrained(tmp_path / "vitg_reg.pth", specialization="paper")
    assert specialized.config["specialization"] != "vanilla"
    assert torch.equal(features(specialized, IMAGES), features(vanilla, IMAGES))


def test_the_hub_giant_entries_have_dinov2s_swiglu_ffn():
    for entry in ("dinov2_vitg14", "dinov2_vitg14_reg"):
        with torch.device("meta"):  # ViT-g without allocating it
            giant = hub(entry, specialization="paper")
        assert giant.config["ffn_layer"] == "swiglu" and giant.config["mlp_ratio"] == 4.0
        mlp = giant.blocks[0].mlp  # DINOv2's ViT-g/14: w12 [8192, 1536], w3 [1536, 4096]
        assert (mlp.w1.weight.shape, mlp.w2.weight.shape, mlp.w3.weight.shape) == ((4096, 1536),) * 2 + ((1536, 4096),)
        # The same model as the package's preset with the FFN named: what load_pretrained fills.
        with torch.device("meta"):
            preset = vit_giant(
                patch_size=14, img_size=518, ffn_layer="swiglu", specialization="paper",
                num_registers=4 if entry.endswith("_reg") else 0,
            )  # fmt: skip
        assert {k: v.shape for k, v in giant.state_dict().items()} == {
            k: v.shape for k, v in preset.state_dict().items()
        }


def test_giant_weights_into_an_mlp_model_name_the_ffn_to_build():
    with pytest.raises(CheckpointMismatchError, match=r"packed SwiGLU FFN \(mlp\.w12.*ffn_layer='swiglu'"):
        load_pretrained(VisionTransformer(**{**GIANT, "ffn_layer": "mlp"}), dinov2_giant_state())


def test_a_swiglu_backbone_with_another_rounding_is_refused_for_dinov2s_formats(tmp_path):
    model = random_backbone(ffn_layer="swiglu64")
    with pytest.raises(ConfigError, match=r"FFN is 'swiglu64'.*--format clsvit or safetensors"):
        export_backbone(model, tmp_path / "x.pth", "dinov2")
