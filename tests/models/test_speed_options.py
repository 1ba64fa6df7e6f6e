"""Options for speed and memory that must not change what the backbone computes."""

import torch

from clsvit_lightning.models import VisionTransformer


def tiny(**kwargs):
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_registers=2, specialization="paper",
        layerscale_init=0.5, **kwargs,
    )  # fmt: skip


def test_activation_checkpointing_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    plain = tiny(drop_path_rate=0.2).train()
    checkpointed = tiny(drop_path_rate=0.2, activation_checkpointing=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    images = torch.randn(4, 3, 32, 32)
    results = []
    for model in (plain, checkpointed):
        torch.manual_seed(1)  # same drop-path draws
        out = model.forward_features(images)
        loss = (out["x_norm_clstoken"] * torch.arange(32.0)).sum() + out["x_norm_patchtokens"].square().mean()
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    assert torch.equal(results[0][0], results[1][0])
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, msg=name)


def test_specialized_backbone_with_registers_compiles_without_graph_breaks():
    model = tiny().eval()
    explanation = torch._dynamo.explain(model.forward_features)(torch.randn(2, 3, 32, 32))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_batch_subset_stochastic_depth_compiles_without_graph_breaks():
    model = tiny(drop_path_rate=0.4).train()  # DINOv2's ViT-L rate: randperm + index_add in every block
    explanation = torch._dynamo.explain(model.forward_features)(torch.randn(4, 3, 32, 32))
    assert explanation.graph_break_count == 0, explanation.break_reasons
