"""MonocularDepth: SigLoss, fp32 head, frozen features, a few training steps, validation metrics."""

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from torch.utils.data import DataLoader

from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.tasks.depth import MonocularDepth, scale_invariant_log_loss


def tiny_model(**kwargs):
    backbone = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2)
    return MonocularDepth(backbone, **{"warmup_steps": 0, "num_bins": 32, "upsample": 2, **kwargs})


def depth_scene(seed, height=32, width=40):
    """A ramp in depth whose brightness encodes it, with unmeasured (0) pixels."""
    gen = torch.Generator().manual_seed(seed)
    near, far = 1.0 + 3.0 * torch.rand(2, generator=gen).sort().values
    depth = torch.linspace(float(near), float(far) + 1.0, height)[:, None].expand(height, width).clone()
    image = (depth / 5.0)[None].expand(3, -1, -1) + 0.05 * torch.randn(3, height, width, generator=gen)
    valid = torch.rand(height, width, generator=gen) > 0.1
    depth[~valid] = 0.0
    return {"image": image, "depth": depth, "valid": valid}


class TinyDepth(LightningDataModule):
    def __init__(self):
        super().__init__()
        self.train, self.val = [depth_scene(i) for i in range(16)], [depth_scene(100 + i) for i in range(3)]

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=4, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=2)


def trainer(tmp_path, **kwargs):
    options = dict(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )  # fmt: skip
    return Trainer(**{**options, **kwargs})


def test_sigloss_matches_the_toolbox_formula():
    rng = np.random.default_rng(0)
    pred, target = rng.uniform(0.5, 5, (2, 6, 7)), rng.uniform(0.5, 5, (2, 6, 7))
    valid = rng.random((2, 6, 7)) < 0.8
    target[~valid & (rng.random((2, 6, 7)) < 0.5)] = 0.0
    mask = valid & (target > 0)
    g = np.log(pred[mask] + 1e-3) - np.log(target[mask] + 1e-3)
    expected = np.sqrt(np.var(g, ddof=1) + 0.15 * np.mean(g) ** 2)  # torch.var is unbiased, as the toolbox's
    loss = scale_invariant_log_loss(*(torch.from_numpy(a) for a in (pred, target, valid)))
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # Scale-invariant up to the (1 - lambda) term: a global scale only moves mean(g).
    empty = scale_invariant_log_loss(torch.ones(1, 2, 2), torch.zeros(1, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool))
    assert empty.item() == 0.0


def test_under_mixed_precision_the_head_runs_in_fp32():
    model = tiny_model().eval()
    images = torch.randn(1, 3, 32, 40)
    predictor = model.predictor
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        features = predictor.features(images)
        outputs, _, _ = predictor._padded_outputs(images)
        assert predictor.head(features).dtype == torch.bfloat16  # what the head would give under autocast
    with torch.no_grad():
        expected = predictor.head(features.float())  # fp32 depths from the bf16 features
    assert outputs.dtype == torch.float32
    torch.testing.assert_close(outputs, expected, rtol=0, atol=0)


def test_features_are_frozen_with_cls_beside_patches_and_multilayer_blocks():
    model = tiny_model(mode="multilayer")
    model.train()
    assert not model.backbone.training and all(not p.requires_grad for p in model.backbone.parameters())
    assert model.predictor.features.blocks == [0, 1, 2, 3]
    assert model.predictor.head.conv.in_channels == 4 * 2 * 32  # 4 blocks x (patch + [CLS]) x D
    assert model(torch.randn(1, 3, 27, 35)).shape == (1, 27, 35)  # padded to the patch grid and cropped back


def test_a_few_training_steps_reduce_the_loss_and_validation_logs_metrics(tmp_path):
    seed_everything(0)
    model = tiny_model(lr=5e-2)
    losses = []
    original = model.training_step

    def recording_step(batch, batch_idx):
        losses.append(original(batch, batch_idx))
        return losses[-1]

    model.training_step = recording_step
    fit = trainer(tmp_path, max_steps=32, limit_val_batches=0)
    fit.fit(model, TinyDepth())
    assert np.mean([x.item() for x in losses[-4:]]) < 0.8 * np.mean([x.item() for x in losses[:4]])
    results = trainer(tmp_path).validate(model, TinyDepth())[0]
    assert {"val/rmse", "val/abs_rel", "val/delta1"} <= set(results)
    assert results["val/rmse"] > 0 and 0 <= results["val/delta1"] <= 1


def test_a_negative_lr_is_refused_by_name():
    from clsvit_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match="MonocularDepth: lr must be > 0, got -0.001"):
        tiny_model(lr=-1e-3)
