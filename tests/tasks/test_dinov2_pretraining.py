import copy
import re

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from clsvit_lightning.models import VisionTransformer, count_flops_per_image, load_pretrained
from clsvit_lightning.tasks.common import NonFiniteLossError
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining, export_teacher_backbone
from tests.tasks.tiny_ssl_data import TinySSLData


def tiny_module(specialization="vanilla", **kwargs):
    backbone = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, specialization=specialization
    )
    defaults = dict(
        num_prototypes=64, head_hidden_dim=48, head_bottleneck_dim=16, warmup_epochs=1, base_lr=0.05,
        warmup_teacher_temperature_epochs=1, freeze_last_layer_epochs=0,
    )  # fmt: skip
    return DINOv2Pretraining(backbone, **{**defaults, **kwargs})


def trainer(tmp_path, max_epochs=2, **kwargs):
    return Trainer(
        default_root_dir=tmp_path, max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, deterministic=True, **kwargs,
    )  # fmt: skip


def test_teacher_is_a_frozen_copy_that_stays_in_eval_mode():
    module = tiny_module("paper")
    assert all(not p.requires_grad for p in module.teacher.parameters())
    for (name, s), (_, t) in zip(module.student.state_dict().items(), module.teacher.state_dict().items(), strict=True):
        assert torch.equal(s, t), name
    module.train()
    assert module.student.training and not module.teacher.training


def test_ema_update_formula():
    module = tiny_module()
    with torch.no_grad():
        for p in module.student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in module.teacher.parameters()]
    module.update_teacher(0.9)
    for old, new, student in zip(before, module.teacher.parameters(), module.student.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * student)


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_flops_per_batch_count_what_the_student_and_teacher_compute(rate):
    module = tiny_module()
    backbone = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, drop_path_rate=rate
    )  # fmt: skip
    module.student["backbone"] = backbone
    batch = {"global_crops": torch.zeros(2, 3, 3, 32, 32), "local_crops": torch.zeros(4, 3, 3, 16, 16)}
    embed = lambda side: 2 * (side // 8) ** 2 * 3 * 64 * 32  # noqa: E731 (the patch conv)
    full_global, full_local = count_flops_per_image(backbone, 32), count_flops_per_image(backbone, 16)
    # By hand: 6 global and 12 local views; at rate 0.5 the blocks run on int(6 * 0.5) = 3 of 6 and
    # 6 of 12 views, the patch embedding on all of them.
    kept = (1.0, 1.0) if rate == 0 else (3 / 6, 6 / 12)
    student_global = embed(32) + (full_global - embed(32)) * kept[0]
    student_local = embed(16) + (full_local - embed(16)) * kept[1]
    expected = 3 * (6 * student_global + 12 * student_local) + 6 * full_global
    assert module._count_flops_per_batch(batch) == pytest.approx(expected, rel=1e-9, abs=1)
    # Head warm-up: the frozen student backbone runs its forward only (no backward through it).
    frozen = (6 * student_global + 12 * student_local) + 6 * full_global
    assert module._count_flops_per_batch(batch, backbone_frozen=True) == pytest.approx(frozen, rel=1e-9, abs=1)


def test_a_separate_ibot_head_takes_its_own_sizes():
    module = tiny_module(
        separate_ibot_head=True, ibot_num_prototypes=40, ibot_head_hidden_dim=24, ibot_head_bottleneck_dim=8
    )
    dino, ibot = module.student["dino_head"], module.student["ibot_head"]
    assert dino.mlp[0].out_features == 48 and dino.last_layer.weight_v.shape == (64, 16)
    assert ibot.mlp[0].out_features == 24 and ibot.last_layer.weight_v.shape == (40, 8)
    assert module.ibot_center.center.shape[-1] == 40


@pytest.mark.parametrize("targets", ["centering", "sinkhorn_knopp"])
def test_a_few_steps_train_and_the_loss_decreases(tmp_path, targets):
    seed_everything(0)
    module = tiny_module("paper", teacher_targets=targets, separate_ibot_head=targets == "sinkhorn_knopp")
    losses = []

    class Record(torch.nn.Module):
        pass

    fit = trainer(tmp_path, max_epochs=6)
    original = module.training_step

    def recording_step(batch, batch_idx):
        loss = original(batch, batch_idx)
        losses.append(loss.item())
        return loss

    module.training_step = recording_step
    fit.fit(module, TinySSLData(batch_size=4, length=16))
    assert fit.global_step == 24
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first
    # The schedules were applied: the lr went through warmup and decay.
    assert module.schedules["lr"][0] == 0.0 and module.schedules["lr"].max() > 0


def test_non_finite_loss_stops_with_a_clear_message(tmp_path):
    module = tiny_module()
    module.hparams.base_lr = float("nan")  # refused as an option (see below); set after the checks to provoke a NaN
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 1"):
        trainer(tmp_path).fit(module, TinySSLData())


def test_exact_resume_from_a_checkpoint(tmp_path):
    seed_everything(0)
    uninterrupted = tiny_module("paper")
    trainer(tmp_path / "a", max_epochs=2).fit(uninterrupted, TinySSLData())

    seed_everything(0)
    first_half = tiny_module("paper")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "b", save_last=True)
    # The same run (same schedules), interrupted after its first epoch.
    trainer(tmp_path / "b", max_epochs=2, callbacks=[checkpoint, StopAfterFirstEpoch()]).fit(first_half, TinySSLData())

    seed_everything(123)  # a different process state: everything must come from the checkpoint
    resumed = tiny_module("paper")
    trainer(tmp_path / "c", max_epochs=2).fit(resumed, TinySSLData(), ckpt_path=tmp_path / "b" / "last.ckpt")
    for (name, a), (_, b) in zip(uninterrupted.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


class StopAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_export_writes_the_teacher_backbone_for_load_pretrained(tmp_path):
    module = tiny_module("paper")
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer(tmp_path, max_epochs=1, callbacks=[checkpoint]).fit(module, TinySSLData())
    info = export_teacher_backbone(tmp_path / "last.ckpt", tmp_path / "teacher.pth")
    assert info["config"]["specialization"] == module.teacher_backbone.config["specialization"]
    restored = VisionTransformer(**info["config"])
    load_pretrained(restored, tmp_path / "teacher.pth")
    for (name, a), (_, b) in zip(
        restored.state_dict().items(), module.teacher_backbone.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    direct = VisionTransformer(**info["config"])
    load_pretrained(direct, tmp_path / "last.ckpt")  # the Lightning checkpoint itself: its teacher
    assert torch.equal(direct.norm.prefix_weight, module.teacher_backbone.norm.prefix_weight)
    assert not torch.equal(copy.deepcopy(module.student["backbone"]).pos_embed, module.teacher_backbone.pos_embed)


def test_schedules_with_max_steps_only(tmp_path):
    module = tiny_module(warmup_epochs=1)
    fit = Trainer(default_root_dir=tmp_path, max_steps=6, accelerator="cpu", logger=False, enable_progress_bar=False,
                  enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
    fit.fit(module, TinySSLData(batch_size=4, length=16))
    assert fit.global_step == 6
    assert len(module.schedules["lr"]) == 6
    peak = module.schedules["lr"][4]  # the cosine's first value; the warmup (4 steps) ends on it, as in DINOv2
    assert module.schedules["lr"][:4].tolist() == pytest.approx([0.0, peak / 3, 2 * peak / 3, peak])


def test_fixed_length_epochs_count_the_limited_batches(tmp_path):
    # DINOv2's 1250-iteration "epochs" (configs/pretrain/dinov2.yaml: limit_train_batches): here 2 of
    # the loader's 4 batches make an epoch; warmup (1 epoch) and the total (3 epochs) follow them.
    module = tiny_module(warmup_epochs=1)
    fit = trainer(tmp_path, max_epochs=3, limit_train_batches=2, enable_checkpointing=False)
    fit.fit(module, TinySSLData(batch_size=4, length=16))
    assert fit.global_step == 6 and len(module.schedules["lr"]) == 6
    peak = module.schedules["lr"][2]
    assert module.schedules["lr"][:3].tolist() == pytest.approx([0.0, peak, peak])  # warmup: 2 steps, 0 -> peak


def test_uint8_batches_are_normalised_after_transfer():
    module = tiny_module()
    crops = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8)
    batch = module.on_after_batch_transfer({"global_crops": crops, "masks": torch.zeros(2, 3, 16, dtype=torch.bool)}, 0)
    assert batch["global_crops"].dtype == torch.float32
    expected = (crops.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(3, 1, 1)
    torch.testing.assert_close(batch["global_crops"], expected)


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("base_lr", 0.0, "> 0"),
        ("base_lr", -0.004, "> 0"),
        ("weight_decay", -0.04, ">= 0"),
        ("weight_decay_end", -1.0, ">= 0"),
        ("teacher_momentum", 1.2, "in [0, 1]"),
        ("teacher_momentum_end", -0.1, "in [0, 1]"),
        ("teacher_temperature", 0.0, "> 0"),
        ("warmup_teacher_temperature", -0.04, "> 0"),
        ("base_lr", float("nan"), "> 0"),
    ],
)
def test_bad_option_values_are_refused_by_name(option, value, expected):
    from clsvit_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"DINOv2Pretraining: {option} must be {re.escape(expected)}, got"):
        tiny_module(**{option: value})


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda path: None, r"missing\.ckpt does not exist"),
        (lambda path: path.write_bytes(b""), r"missing\.ckpt is an empty file"),
        (lambda path: path.write_bytes(b"garbage"), r"missing\.ckpt is truncated or not a torch checkpoint"),
        (
            lambda path: torch.save({"state_dict": {"backbone.cls_token": torch.zeros(1)}}, path),
            r"missing\.ckpt holds no teacher\.backbone\.\* weights; expected a DINOv2Pretraining checkpoint",
        ),
    ],
)
def test_export_names_the_file_and_what_it_expected(tmp_path, write, message):
    from clsvit_lightning.errors import ConfigError

    path = tmp_path / "missing.ckpt"
    write(path)
    with pytest.raises(ConfigError, match=message):
        export_teacher_backbone(path, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()
