"""Continued self-distillation from a trained vanilla model (``DINOv2Pretraining(pretrained=...)``).

The specification: the first step of a specialized continuation computes the vanilla loss (the warm
start is exact); the head warm-up changes no backbone parameter; heads load when the file has them;
a file that does not fit (another architecture, a DINOv3 backbone) is refused before any step.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import seed_everything
from lightning.pytorch.strategies import DDPStrategy

from clsvit_lightning.cli import run
from clsvit_lightning.config_files import CONFIG_ROOT
from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.models.checkpoint import CheckpointMismatchError
from clsvit_lightning.models.dinov3 import dinov3_backbone_config
from clsvit_lightning.models.dinov3_keys import DINOV3_ARCHS, DINOv3Arch, dinov3_state_dict_shapes
from clsvit_lightning.study.proxy import NORMS_LS
from clsvit_lightning.tasks.continuation import check_head_warmup
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining, export_teacher_backbone
from tests.models.dinov3_reference import random_state_dict
from tests.tasks.step_record import StepRecord, cpu_trainer
from tests.tasks.tiny_ssl_data import TinySSLData

HEADS = dict(num_prototypes=64, head_hidden_dim=48, head_bottleneck_dim=16)
RECIPE = dict(
    warmup_epochs=1, base_lr=0.05, lr_scaling_rule="none", warmup_teacher_temperature_epochs=1,
    freeze_last_layer_epochs=0,
)  # fmt: skip


def backbone(specialization="vanilla", **kwargs):
    # Depth 3: `paper` splits qkv in block 0 (the first third), as well as every norm and LayerScale.
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, drop_path_rate=0.2)
    return VisionTransformer(**{**args, **kwargs}, specialization=specialization)


def continued(pretrained, specialization="vanilla", seed=0, **kwargs):
    seed_everything(seed)  # as the CLI does before building the model: fresh heads depend on it
    return DINOv2Pretraining(backbone(specialization), pretrained=str(pretrained), **{**HEADS, **RECIPE, **kwargs})


@pytest.fixture(scope="module")
def vanilla_run(tmp_path_factory):
    """A trained vanilla pretraining: its Lightning checkpoint (heads, centers) and its exported teacher."""
    root = tmp_path_factory.mktemp("vanilla")
    seed_everything(0)
    module = DINOv2Pretraining(backbone(), **HEADS, **RECIPE)
    cpu_trainer(root, max_steps=6).fit(module, TinySSLData(batch_size=4, length=16))
    checkpoint = next(root.rglob("*.ckpt"))
    export_teacher_backbone(str(checkpoint), str(root / "backbone.pth"))
    return SimpleNamespace(checkpoint=checkpoint, backbone=root / "backbone.pth", module=module)


@pytest.mark.parametrize("source", ["checkpoint", "backbone"])
@pytest.mark.parametrize("specialization", ["paper", NORMS_LS])
def test_the_first_continued_step_gives_the_vanilla_loss(tmp_path, vanilla_run, source, specialization):
    """Heads loaded (the project's checkpoint) or fresh from the same seed (a released backbone)."""
    losses = {}
    for spec in ("vanilla", specialization):
        record = StepRecord()
        module = continued(getattr(vanilla_run, source), spec)
        cpu_trainer(tmp_path / spec, max_steps=1, callbacks=[record]).fit(module, TinySSLData(batch_size=4, length=16))
        losses[spec] = record.losses[1]
    assert losses[specialization] == losses["vanilla"]


def test_student_and_teacher_start_from_the_trained_teacher(vanilla_run):
    module = continued(vanilla_run.checkpoint, "paper")
    trained = vanilla_run.module.teacher_backbone.state_dict()
    for network in (module.student, module.teacher):
        state = network["backbone"].state_dict()
        assert all(torch.equal(state[k], v) for k, v in trained.items())
        assert torch.equal(state["blocks.0.attn.qkv.prefix_weight"], trained["blocks.0.attn.qkv.weight"])


def test_heads_and_centers_load_when_the_checkpoint_has_them(vanilla_run):
    module = continued(vanilla_run.checkpoint)
    assert module.loaded_heads == ["dino_head"]
    trained = vanilla_run.module
    for network in (module.student, module.teacher):  # both from the trained teacher's head
        for (name, value), expected in zip(
            network["dino_head"].state_dict().items(), trained.teacher["dino_head"].state_dict().values(), strict=True
        ):
            assert torch.equal(value, expected), name
    assert torch.equal(module.dino_center.center, trained.dino_center.center)
    assert module.dino_center.center.abs().sum() > 0


def test_dinov2_training_checkpoints_give_their_heads_too(tmp_path, vanilla_run):
    """DINOv2's teacher_checkpoint.pth: ``{"teacher": {"backbone.*", "dino_head.*"}}``, our key names."""
    teacher = vanilla_run.module.teacher
    state = {f"{part}.{k}": v for part in ("backbone", "dino_head") for k, v in teacher[part].state_dict().items()}
    torch.save({"teacher": state}, tmp_path / "teacher_checkpoint.pth")
    module = continued(tmp_path / "teacher_checkpoint.pth")
    assert module.loaded_heads == ["dino_head"]
    assert torch.equal(module.student["dino_head"].mlp[0].weight, teacher["dino_head"].mlp[0].weight)


def test_heads_are_fresh_when_the_file_has_none(vanilla_run):
    seed_everything(0)
    reference = DINOv2Pretraining(backbone(), **HEADS)  # what the seed gives a new head
    module = continued(vanilla_run.backbone, head_warmup_epochs=1)
    assert module.loaded_heads == []
    assert torch.equal(module.student["dino_head"].mlp[0].weight, reference.student["dino_head"].mlp[0].weight)
    assert torch.equal(module.dino_center.center, torch.zeros_like(module.dino_center.center))


def test_fresh_heads_without_a_warmup_are_warned_about(vanilla_run):
    with pytest.warns(UserWarning, match="head_warmup_epochs is 0"):
        continued(vanilla_run.backbone)


def test_the_head_warmup_changes_no_backbone_parameter(tmp_path, vanilla_run):
    # 4 batches per epoch: a warm-up of 0.5 epoch is steps 0 and 1; the backbones join at step 2.
    record = StepRecord()
    module = continued(vanilla_run.backbone, "paper", head_warmup_epochs=0.5)
    fit = cpu_trainer(tmp_path, max_steps=4, callbacks=[record])
    fit.fit(module, TinySSLData(batch_size=4, length=16))
    assert module.head_warmup_steps == 2
    start, joined, end = record.states[0], record.states[2], module.state_dict()
    backbone_keys = [k for k in start if ".backbone." in k]
    head_keys = [k for k in start if "_head." in k]
    assert backbone_keys and head_keys
    assert all(torch.equal(joined[k], start[k]) for k in backbone_keys)  # student and teacher backbones
    for network in ("student", "teacher"):  # the teacher's heads follow the student's
        assert any(not torch.equal(joined[k], start[k]) for k in head_keys if k.startswith(network))
    assert any(not torch.equal(end[k], start[k]) for k in backbone_keys if k.startswith("student."))
    assert any(not torch.equal(end[k], start[k]) for k in backbone_keys if k.startswith("teacher."))
    # The warm-up's own schedule: the heads ramp to the peak, then the recipe starts afresh.
    lr, momentum = module.schedules["lr"], module.schedules["teacher_momentum"]
    assert list(lr[:2]) == [0.0, 0.05] and lr[2] == 0.0 and len(lr) == 4
    assert list(momentum[:2]) == [0.9, 0.9] and momentum[2] == module.hparams.teacher_momentum


def test_without_a_warmup_the_schedules_are_the_recipes(tmp_path):
    seed_everything(0)
    module = DINOv2Pretraining(backbone(), **HEADS, **RECIPE)
    cpu_trainer(tmp_path, max_steps=4).fit(module, TinySSLData(batch_size=4, length=16))
    assert module.head_warmup_steps == 0
    assert np.array_equal(module.schedules["lr"], np.linspace(0.0, 0.05, 4))  # DINOv2's warmup, as before


# ------------------------------------------------------------------------------------ bad input
def test_a_checkpoint_of_another_architecture_is_refused_before_any_step(vanilla_run):
    with pytest.raises(CheckpointMismatchError, match="does not match the model") as error:
        DINOv2Pretraining(backbone(embed_dim=48, num_heads=3), pretrained=str(vanilla_run.checkpoint), **HEADS)
    assert "embed_dim=48" in str(error.value) and "embed_dim=32" in str(error.value)


def test_heads_of_other_sizes_are_refused_rather_than_replaced(vanilla_run):
    with pytest.raises(CheckpointMismatchError, match="dino_head") as error:
        DINOv2Pretraining(backbone(), pretrained=str(vanilla_run.checkpoint), **{**HEADS, "num_prototypes": 32})
    assert "(64, 16)" in str(error.value) and "`clsvit export`" in str(error.value)


def test_a_dinov3_file_in_a_dinov2_layout_backbone_is_refused_with_what_it_is(tmp_path):
    state = random_state_dict(dinov3_state_dict_shapes(DINOV3_ARCHS["vits16"]))
    torch.save(state, tmp_path / "dinov3_vits16_pretrain.pth")
    vit_s16 = VisionTransformer(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6)
    with pytest.raises(CheckpointMismatchError, match="DINOv3") as error:
        DINOv2Pretraining(vit_s16, pretrained=str(tmp_path / "dinov3_vits16_pretrain.pth"), **HEADS)
    assert "dinov3_vits16" in str(error.value)  # what to build instead


def test_the_cli_reports_a_mismatch_in_one_message(tmp_path, vanilla_run):
    with pytest.raises(SystemExit) as exit_info:
        run([
            "fit", "--config", "pretrain/dinov2", "--config", "pretrain/tiny_synthetic",
            "--config", "pretrain/continue",
            "--model.init_args.pretrained", str(vanilla_run.backbone),
            "--trainer.default_root_dir", str(tmp_path), "--data.init_args.root", str(tmp_path),
        ])  # fmt: skip
    assert "clsvit fit: checkpoint" in str(exit_info.value) and "does not match the model" in str(exit_info.value)
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_warmup_as_long_as_the_run_is_refused_at_fit_start(tmp_path, vanilla_run):
    module = continued(vanilla_run.backbone, head_warmup_epochs=1)
    with pytest.raises(ConfigError, match="leaves none of the run's 4 steps"):
        cpu_trainer(tmp_path, max_steps=4).fit(module, TinySSLData(batch_size=4, length=16))


@pytest.mark.parametrize(
    ("strategy", "allowed"), [(DDPStrategy(), False), (DDPStrategy(find_unused_parameters=True), True)]
)
def test_ddp_must_expect_the_frozen_backbone(strategy, allowed):
    fake = SimpleNamespace(strategy=strategy)
    if allowed:
        check_head_warmup(fake, "DINOv2Pretraining", 2, 10)
    else:
        with pytest.raises(ConfigError, match="ddp_find_unused_parameters_true"):
            check_head_warmup(fake, "DINOv2Pretraining", 2, 10)


# ------------------------------------------------------------------------------------- recipes
RELEASES = {"vits14": (384, 12, 6), "vitb14": (768, 12, 12), "vitl14": (1024, 24, 16)}


@pytest.mark.parametrize("registers", [False, True])
@pytest.mark.parametrize("specialization", ["vanilla", "paper"])
@pytest.mark.parametrize("size", sorted(RELEASES))
def test_continue_recipes_describe_the_dinov2_releases(capsys, size, specialization, registers):
    configs = ["pretrain/dinov2", "pretrain/continue", f"pretrain/continue_{size}_{specialization}"]
    configs += ["pretrain/continue_reg4"] * registers
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", *sum((["--config", c] for c in configs), []), "--print_config"])
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    vit = model["backbone"]["init_args"]
    assert (vit["embed_dim"], vit["depth"], vit["num_heads"]) == RELEASES[size]
    assert (vit["img_size"], vit["patch_size"], vit["specialization"]) == (518, 14, specialization)
    assert vit["num_registers"] == 4 * registers
    assert (vit["interpolate_offset"], vit["interpolate_antialias"]) == ((0.0, True) if registers else (0.1, False))
    assert data["patch_size"] == 14 and data["local_crop_size"] % 14 == 0
    assert model["head_warmup_epochs"] > 0 and model["teacher_momentum"] >= 0.999
    assert config["trainer"]["max_epochs"] * config["trainer"]["limit_train_batches"] == 10_000


def test_the_continue_overlay_sets_schedules_only():
    """So it also continues other models (the CPU proxy's tiny one) without touching their sizes or heads."""
    overlay = yaml.safe_load((CONFIG_ROOT / "pretrain/continue.yaml").read_text())
    assert set(overlay["model"]["init_args"]).isdisjoint({"backbone", "num_prototypes", "teacher_targets"})


@pytest.mark.parametrize("specialization", ["vanilla", "paper"])
@pytest.mark.parametrize("size", ["vits16", "vitb16", "vitl16"])
def test_dinov3_continue_recipes_build_the_released_layouts(capsys, size, specialization):
    configs = ["pretrain/dinov2", "pretrain/continue", f"pretrain/continue_dinov3_{size}_{specialization}"]
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", *sum((["--config", c] for c in configs), []), "--print_config"])
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    vit = config["model"]["init_args"]["backbone"]["init_args"]
    release = dinov3_backbone_config(size)
    for key in set(release) - {"img_size", "specialization"}:
        assert vit[key] == release[key], key
    assert vit["specialization"] == specialization and config["data"]["init_args"]["patch_size"] == 16


def test_a_dinov3_release_continues_into_a_specialized_dinov3_backbone_exactly(tmp_path):
    """Official DINOv3 keys (storage tokens, RoPE periods, masked key bias) into vanilla and `paper`."""
    arch = DINOv3Arch(embed_dim=32, depth=3, num_heads=2, patch_size=8)
    torch.save(random_state_dict(dinov3_state_dict_shapes(arch)), tmp_path / "dinov3_tiny.pth")
    losses = {}
    for spec in ("vanilla", "paper"):
        seed_everything(0)
        vit = VisionTransformer(**{**dinov3_backbone_config(arch, img_size=32), "specialization": spec})
        module = DINOv2Pretraining(vit, pretrained=str(tmp_path / "dinov3_tiny.pth"), **HEADS, **RECIPE)
        record = StepRecord()
        cpu_trainer(tmp_path / spec, max_steps=1, callbacks=[record]).fit(module, TinySSLData(batch_size=4, length=16))
        losses[spec] = record.losses[1]
    assert losses["paper"] == losses["vanilla"]
