import torch
import torch.nn.functional as F

from clsvit_lightning.models.dino_head import DINOHead


def test_head_is_mlp_then_normalised_bottleneck_then_weight_normalised_prototypes():
    head = DINOHead(16, num_prototypes=10, hidden_dim=32, bottleneck_dim=8)
    with torch.no_grad():
        head.last_layer.weight_g.uniform_(0.5, 2.0)
    x = torch.randn(4, 16)
    m = head.mlp
    bottleneck = m[4](F.gelu(m[2](F.gelu(m[0](x)))))
    v, g = head.last_layer.weight_v, head.last_layer.weight_g
    expected = F.normalize(bottleneck, dim=-1) @ (g * v / v.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(head(x), expected)


def test_state_dict_keys_are_dinov2s():
    keys = set(DINOHead(16, 10, 32, 8).state_dict())
    assert keys == {
        "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
        "last_layer.weight_g", "last_layer.weight_v",
    }  # fmt: skip
    assert DINOHead(16, 10, 32, 8).last_layer.weight_g.shape == (10, 1)
