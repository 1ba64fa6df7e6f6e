"""``from_pretrained(path)``: the backbone of any file or folder the project writes or reads, built and loaded."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models import (
    CheckpointMismatchError,
    VisionTransformer,
    export_backbone,
    from_pretrained,
    load_pretrained,
)
from tests.interop.backbones import features, random_backbone
from tests.interop.task_checkpoints import TASKS, backbone_of, write_task_checkpoint

IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def same_backbone(loaded, expected):
    assert loaded.config == expected.config
    assert not loaded.training
    assert torch.equal(features(loaded, IMAGES), features(expected.eval(), IMAGES))


@pytest.mark.parametrize("name", list(TASKS))
def test_every_tasks_checkpoint_gives_its_backbone_with_architecture_and_specialization(tmp_path, name):
    task = write_task_checkpoint(name, tmp_path / f"{name}.ckpt")
    loaded = from_pretrained(tmp_path / f"{name}.ckpt")
    assert loaded.config["specialization"] != "vanilla"
    same_backbone(loaded, backbone_of(task))


def test_a_pretraining_checkpoint_gives_the_teacher_or_asked_the_student(tmp_path):
    task = write_task_checkpoint("dinov2", tmp_path / "last.ckpt")
    same_backbone(from_pretrained(tmp_path / "last.ckpt"), backbone_of(task, "teacher"))
    same_backbone(from_pretrained(tmp_path / "last.ckpt", which="teacher"), backbone_of(task, "teacher"))
    same_backbone(from_pretrained(tmp_path / "last.ckpt", which="student"), backbone_of(task, "student"))
    assert not torch.equal(*(backbone_of(task, w).pos_embed for w in ("teacher", "student")))


def test_a_single_backbone_checkpoint_has_no_student(tmp_path):
    write_task_checkpoint("supervised", tmp_path / "run.ckpt")
    with pytest.raises(ConfigError, match=r"run\.ckpt has no student backbone \(its backbone is at backbone\.\*\)"):
        from_pretrained(tmp_path / "run.ckpt", which="student")


def test_a_run_folder_gives_its_newest_last_checkpoint(tmp_path):
    folder = tmp_path / "run" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    older = write_task_checkpoint("supervised", folder / "last-v1.ckpt", seed=1)
    newer = write_task_checkpoint("dinov2", folder / "last.ckpt", seed=2)
    write_task_checkpoint("knn", folder / "epoch=9.ckpt", seed=3)  # newest file, but not a last*.ckpt
    past = time.time() - 60
    os.utime(folder / "last-v1.ckpt", (past, past))
    same_backbone(from_pretrained(tmp_path / "run"), backbone_of(newer))
    assert not torch.equal(backbone_of(older).pos_embed, backbone_of(newer).pos_embed)


def test_import_and_call_need_no_lightning(tmp_path):
    write_task_checkpoint("dinov2", tmp_path / "last.ckpt")
    export_backbone(random_backbone(), tmp_path / "backbone.safetensors", "safetensors")
    code = (
        "import sys; from clsvit_lightning.models import from_pretrained; "
        f"from_pretrained({str(tmp_path / 'last.ckpt')!r}, which='student'); "
        f"from_pretrained({str(tmp_path / 'backbone.safetensors')!r}); "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', "
        "'lightning_fabric', 'jsonargparse', 'transformers', 'safetensors', 'timm')); "
        "assert not loaded, loaded"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("num_registers", [0, 4])
def test_a_dinov2_or_timm_state_dict_without_architecture_is_read_from_its_shapes(tmp_path, num_registers):
    # DINOv2's own files are bare state dicts; 128 wide = 2 heads of 64, as every released size.
    model = random_backbone(embed_dim=128, num_heads=2, num_registers=num_registers)
    export_backbone(model, tmp_path / "dinov2.pth", "dinov2")
    export_backbone(model, tmp_path / "timm.pth", "timm")
    for path in (tmp_path / "dinov2.pth", tmp_path / "timm.pth"):
        loaded = from_pretrained(path)
        assert (loaded.config["embed_dim"], loaded.config["num_heads"], loaded.config["depth"]) == (128, 2, 2)
        assert loaded.config["num_registers"] == num_registers and loaded.config["img_size"] == 42
        images = torch.randn(2, 3, 42, 42)
        torch.testing.assert_close(features(loaded, images), features(model, images), atol=1e-6, rtol=0)


def test_a_file_without_architecture_and_unusual_heads_or_specialization_asks_for_them(tmp_path):
    unusual = random_backbone(embed_dim=96, num_heads=2)
    torch.save(unusual.state_dict(), tmp_path / "unusual.pth")
    with pytest.raises(
        ConfigError, match=r"unusual\.pth does not state its number of attention heads.*pass num_heads="
    ):
        from_pretrained(tmp_path / "unusual.pth")
    images = torch.randn(1, 3, 42, 42)
    assert torch.equal(
        features(from_pretrained(tmp_path / "unusual.pth", num_heads=2), images), features(unusual, images)
    )

    specialized = random_backbone(embed_dim=128, num_heads=2, specialization="paper")
    torch.save(specialized.state_dict(), tmp_path / "specialized.pth")
    with pytest.raises(ConfigError, match=r"specialized\.pth holds specialized weights without their configuration"):
        from_pretrained(tmp_path / "specialized.pth")
    loaded = from_pretrained(tmp_path / "specialized.pth", specialization="paper")
    assert torch.equal(features(loaded, images), features(specialized, images))


def test_overrides_warm_start_a_specialized_model_from_vanilla_weights(tmp_path):
    vanilla = random_backbone(num_registers=2)
    export_backbone(vanilla, tmp_path / "vanilla.pth")
    specialized = from_pretrained(tmp_path / "vanilla.pth", specialization="paper")
    assert specialized.config["specialization"] != "vanilla" and specialized.load_report.warm_started
    images = torch.randn(2, 3, 42, 42)
    assert torch.equal(features(specialized, images), features(vanilla, images))


def test_a_checkpoint_of_another_architecture_is_named_with_what_was_expected(tmp_path):
    resnet = {"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8), "fc.bias": torch.zeros(10)}
    torch.save({"state_dict": resnet}, tmp_path / "resnet.ckpt")
    with pytest.raises(ConfigError, match=r"resnet\.ckpt holds no ViT backbone \(no \*patch_embed\.proj\.weight"):
        from_pretrained(tmp_path / "resnet.ckpt")

    # An architecture stated by the file that its weights do not have.
    model = random_backbone()
    torch.save({"model": model.state_dict(), "backbone_config": {**model.config, "depth": 3}}, tmp_path / "lying.pth")
    with pytest.raises(CheckpointMismatchError, match=r"lying\.pth does not match the model") as error:
        from_pretrained(tmp_path / "lying.pth")
    assert "missing from the checkpoint" in str(error.value) and "blocks.2." in str(error.value)

    # A ViT-B file into a ViT of another width.
    export_backbone(random_backbone(embed_dim=128, num_heads=2), tmp_path / "wide.pth")
    with pytest.raises(CheckpointMismatchError, match=r"wide\.pth does not match") as error:
        load_pretrained(
            VisionTransformer(img_size=42, patch_size=14, embed_dim=64, depth=2, num_heads=2), tmp_path / "wide.pth"
        )
    assert "embed_dim=64" in str(error.value) and "embed_dim=128" in str(error.value)
