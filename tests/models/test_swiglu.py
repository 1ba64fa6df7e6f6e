"""SwiGLU feed-forward layers (``models/swiglu.py``): the hidden-size rule and both parameter layouts."""

import pytest
import torch
import torch.nn.functional as F

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.swiglu import (
    SwiGLUFFN,
    TokenSwiGLU,
    pack_w12,
    swiglu_align,
    swiglu_hidden_features,
    unpack_w12,
)


@pytest.mark.parametrize(
    ("model", "embed_dim", "ffn_ratio", "ffn_layer", "hidden"),
    [
        ("DINOv3 vits16plus", 384, 6, "swiglu", 1536),
        ("DINOv3 vitl16plus", 1024, 6, "swiglu", 4096),
        ("DINOv3 vith16plus", 1280, 6, "swiglu", 5120),
        ("DINOv3 vit7b16", 4096, 3, "swiglu64", 8192),
        ("DINOv2 vitg14", 1536, 4, "swiglu", 4096),
    ],
)
def test_published_hidden_sizes(model, embed_dim, ffn_ratio, ffn_layer, hidden):
    assert swiglu_hidden_features(int(embed_dim * ffn_ratio), swiglu_align(ffn_layer)) == hidden, model
    ffn = SwiGLUFFN(64, int(64 * ffn_ratio), align_to=swiglu_align(ffn_layer))
    assert ffn.hidden_features == swiglu_hidden_features(int(64 * ffn_ratio), swiglu_align(ffn_layer))


def test_hidden_size_rule_rounds_two_thirds_up():
    # int(100 * 2 / 3) = 66, then the next multiple of align_to.
    assert [swiglu_hidden_features(100, align) for align in (1, 8, 32, 64, 128)] == [66, 72, 96, 128, 128]
    assert swiglu_hidden_features(96, 8) == 64  # already aligned: unchanged
    assert {name: swiglu_align(name) for name in ("swiglu", "swiglu32", "swiglu64", "swiglu128")} == {
        "swiglu": 8,
        "swiglu32": 32,
        "swiglu64": 64,
        "swiglu128": 128,
    }
    with pytest.raises(ConfigError, match="unknown SwiGLU ffn_layer 'swiglu16'"):
        swiglu_align("swiglu16")


def test_dinov3_layout_and_formula():
    ffn = SwiGLUFFN(16, 48)  # hidden int(32) -> 32
    assert {k: tuple(v.shape) for k, v in ffn.state_dict().items()} == {
        "w1.weight": (32, 16), "w1.bias": (32,),
        "w2.weight": (32, 16), "w2.bias": (32,),
        "w3.weight": (16, 32), "w3.bias": (16,),
    }  # fmt: skip
    with torch.no_grad():
        for linear in (ffn.w1, ffn.w2, ffn.w3):
            linear.bias.normal_()
    x = torch.randn(2, 5, 16)
    w1, w2, w3 = ffn.w1, ffn.w2, ffn.w3
    gate = x @ w1.weight.T + w1.bias
    expected = (gate * torch.sigmoid(gate) * (x @ w2.weight.T + w2.bias)) @ w3.weight.T + w3.bias
    torch.testing.assert_close(ffn(x), expected)
    assert not SwiGLUFFN(16, 48, bias=False).state_dict().keys() & {"w1.bias", "w2.bias", "w3.bias"}
    assert SwiGLUFFN(16, 48, out_features=8).w3.out_features == 8


def dinov2_packed_swiglu(x, w12, b12, w3, b3):
    """DINOv2's SwiGLUFFNFused (dinov2/layers/swiglu_ffn.py), written from its formula."""
    x1, x2 = (x @ w12.T + b12).chunk(2, dim=-1)
    return (F.silu(x1) * x2) @ w3.T + b3


def test_packed_dinov2_layout_computes_the_same_function():
    packed = {"w12.weight": torch.randn(64, 16), "w12.bias": torch.randn(64)}
    packed |= {"w3.weight": torch.randn(16, 32), "w3.bias": torch.randn(16)}
    separate = SwiGLUFFN(16, 48)  # hidden 32: w12 packs two 32-row matrices
    separate.load_state_dict(unpack_w12(packed))
    x = torch.randn(3, 16)
    expected = dinov2_packed_swiglu(x, packed["w12.weight"], packed["w12.bias"], packed["w3.weight"], packed["w3.bias"])
    torch.testing.assert_close(separate(x), expected)
    # w1 is the gate (the silu side): the first half of w12.
    assert torch.equal(separate.w1.weight, packed["w12.weight"][:32])
    assert torch.equal(pack_w12(separate.state_dict())["w12.weight"], packed["w12.weight"])


def test_unpack_w12_renames_every_block_and_pack_w12_inverts_it():
    state = {f"blocks.{i}.mlp.w12.{p}": torch.randn(8, 3)[:, : 3 if p == "weight" else 1].squeeze(-1)
             for i in range(2) for p in ("weight", "bias")}  # fmt: skip
    state |= {"blocks.0.mlp.w3.weight": torch.randn(3, 4), "norm.weight": torch.randn(3)}
    out = unpack_w12(state)
    assert sorted(out) == [
        "blocks.0.mlp.w1.bias", "blocks.0.mlp.w1.weight", "blocks.0.mlp.w2.bias", "blocks.0.mlp.w2.weight",
        "blocks.0.mlp.w3.weight",
        "blocks.1.mlp.w1.bias", "blocks.1.mlp.w1.weight", "blocks.1.mlp.w2.bias", "blocks.1.mlp.w2.weight",
        "norm.weight",
    ]  # fmt: skip
    assert torch.equal(out["blocks.1.mlp.w2.weight"], state["blocks.1.mlp.w12.weight"][4:])
    back = pack_w12(out)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


def test_a_half_missing_or_an_odd_packed_matrix_is_an_error():
    with pytest.raises(ConfigError, match="blocks.0.mlp.w1/w2.weight: only one"):
        pack_w12({"blocks.0.mlp.w1.weight": torch.zeros(4, 3)})
    with pytest.raises(ConfigError, match="blocks.0.mlp.w12.weight: a packed SwiGLU input of 5 rows"):
        unpack_w12({"blocks.0.mlp.w12.weight": torch.zeros(5, 3)})


def test_matches_the_reference_ffn():
    from tests.models.dinov3_reference import _ffn

    ffn = SwiGLUFFN(16, 64, align_to=64).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    state = {f"mlp.{k}": v for k, v in ffn.state_dict().items()}
    torch.testing.assert_close(ffn(x), _ffn(x, state, "mlp"))
    assert torch.equal(ffn.hidden(x), F.silu(ffn.w1(x)) * ffn.w2(x))


def test_token_swiglu_is_swiglu_on_both_groups_and_splits_all_three_matrices():
    shared = TokenSwiGLU(16, 48, align_to=8)  # hidden int(48 * 2 / 3) = 32
    reference = SwiGLUFFN(16, 48, align_to=8)
    reference.load_state_dict(shared.state_dict())  # the same keys: w1, w2, w3
    prefix, patches = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    out_prefix, out_patches = shared(prefix, patches)
    torch.testing.assert_close(out_prefix, reference(prefix))
    torch.testing.assert_close(out_patches, reference(patches))

    split = TokenSwiGLU(16, 48, specialized=True, prefix_path_tokens=1)  # registers take the shared path
    with torch.no_grad():
        for name in ("w1", "w2", "w3"):
            getattr(split, name).prefix_weight.add_(0.3)  # the [CLS] path, trained apart
    shared_path, cls_path = SwiGLUFFN(16, 48), SwiGLUFFN(16, 48)
    state = split.state_dict()
    shared_path.load_state_dict({k: v for k, v in state.items() if "prefix_" not in k})
    cls_path.load_state_dict({k.replace("prefix_", ""): v for k, v in state.items() if "prefix_" in k})
    out_prefix, out_patches = split(prefix, patches)
    torch.testing.assert_close(out_prefix[:, :1], cls_path(prefix[:, :1]))  # [CLS]: the prefix twins
    torch.testing.assert_close(out_prefix[:, 1:], shared_path(prefix[:, 1:]))  # registers
    torch.testing.assert_close(out_patches, shared_path(patches))
    assert not torch.allclose(out_prefix[:, :1], shared_path(prefix[:, :1]))
