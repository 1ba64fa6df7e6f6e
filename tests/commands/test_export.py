"""``clsvit export``: any task's checkpoint to this project's formats or to timm / transformers / DINOv2."""

import json

import pytest
import torch

from clsvit_lightning.cli import run
from clsvit_lightning.models import from_pretrained, load_pretrained
from clsvit_lightning.models.formats import read_safetensors
from tests.interop.backbones import features
from tests.interop.task_checkpoints import backbone_of, write_task_checkpoint

IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is an empty file"),
        (b"\x80\x02garbage", "is truncated or not a torch checkpoint (UnpicklingError)"),
        ({"model": {"cls_token": torch.zeros(1, 1, 4)}}, "holds no ViT backbone (no *patch_embed.proj.weight among"),
    ],
)
def test_export_of_a_bad_checkpoint_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "run.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(SystemExit) as exit_:
        run(["export", "--ckpt", str(path), "--out", str(tmp_path / "teacher.pth")])
    text = str(exit_.value.code)
    assert text.startswith(f"clsvit export: --ckpt {path} ")
    assert message in text and "weights_only=False" not in text and "\n" not in text


@pytest.mark.parametrize("task", ["dinov2", "supervised", "segmentation"])
def test_a_tasks_checkpoint_exports_its_backbone_with_its_specialization(tmp_path, task, capsys):
    module = write_task_checkpoint(task, tmp_path / "last.ckpt")
    for fmt, out in (("clsvit", "backbone.pth"), ("safetensors", "backbone.safetensors")):
        info = run(["export", "--ckpt", str(tmp_path / "last.ckpt"), "--out", str(tmp_path / out), "--format", fmt])
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"] == str(tmp_path / out)
        restored = from_pretrained(tmp_path / out)
        assert restored.config == info["config"] == backbone_of(module).config
        assert restored.config["specialization"] != "vanilla"
        assert torch.equal(features(restored, IMAGES), features(backbone_of(module).eval(), IMAGES))
    assert torch.load(tmp_path / "backbone.pth", weights_only=True).keys() == {"model", "backbone_config"}


def test_the_student_of_a_pretraining_checkpoint_on_request(tmp_path):
    module = write_task_checkpoint("dinov2", tmp_path / "last.ckpt")
    run(["export", "--ckpt", str(tmp_path), "--out", str(tmp_path / "student.pth"), "--which", "student"])
    student = from_pretrained(tmp_path / "student.pth")
    assert torch.equal(features(student, IMAGES), features(backbone_of(module, "student").eval(), IMAGES))


def test_a_vanilla_backbone_exports_to_every_format_and_reads_back(tmp_path):
    module = write_task_checkpoint("dinov2", tmp_path / "last.ckpt", specialization="vanilla")
    expected = features(backbone_of(module).eval(), IMAGES)
    outs = {"clsvit": "b.pth", "safetensors": "b.safetensors", "dinov2": "dinov2.pth", "timm": "timm.safetensors",
            "hf": "hf"}  # fmt: skip
    for fmt, out in outs.items():
        info = run(["export", "--ckpt", str(tmp_path / "last.ckpt"), "--out", str(tmp_path / out), "--format", fmt])
        # A model built from the config, filled by load_pretrained: every format reads back exactly.
        model = type(backbone_of(module))(**info["config"]).eval()
        load_pretrained(model, tmp_path / out)
        torch.testing.assert_close(features(model, IMAGES), expected, atol=1e-6, rtol=0, msg=fmt)
    timm_keys = set(read_safetensors(tmp_path / "timm.safetensors")[0])
    assert {"reg_token", "cls_token", "pos_embed"} <= timm_keys and "mask_token" not in timm_keys
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "dinov2_with_registers"


@pytest.mark.parametrize(("fmt", "library"), [("timm", "timm's"), ("hf", "transformers'"), ("dinov2", "DINOv2's")])
def test_a_specialized_backbone_is_refused_for_libraries_without_its_architecture(tmp_path, fmt, library):
    write_task_checkpoint("supervised", tmp_path / "last.ckpt")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        run(["export", "--ckpt", str(tmp_path / "last.ckpt"), "--out", str(out), "--format", fmt])
    text = str(exit_.value.code)
    assert text.startswith(f"clsvit export: --format {fmt}: {tmp_path / 'last.ckpt'}: the backbone is specialized")
    assert f"and {library}" in text and "--format clsvit" in text and "--format safetensors" in text
    assert not out.exists()
