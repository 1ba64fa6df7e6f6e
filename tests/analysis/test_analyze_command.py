"""``clsvit analyze`` end to end on a tiny checkpoint and a few generated images."""

import json

import cv2
import numpy as np
import pytest
import torch

from clsvit_lightning.analysis import REPORT_KEYS, report_keys
from clsvit_lightning.cli import run
from clsvit_lightning.models import Specialization
from tests.analysis.tiny import trained_vit

TINY = ["--size", "tiny", "--patch_size", "8", "--model_kwargs", "{embed_dim: 48, depth: 3, num_heads: 3}"]


@pytest.fixture
def workspace(tmp_path):
    images = tmp_path / "images" / "class_a"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate([(40, 40), (50, 36), (36, 64)]):
        cv2.imwrite(str(images / f"{index}.png"), rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    ckpt = tmp_path / "vanilla.pth"
    torch.save(trained_vit("vanilla", num_registers=2).state_dict(), ckpt)
    return tmp_path, ckpt


def test_analyze_writes_the_report_figures_and_advice(workspace, capsys):
    root, ckpt = workspace
    out = root / "out"
    argv = ["analyze", "--ckpt", str(ckpt), "--data", str(root / "images"), "--out", str(out), *TINY]
    result = run([*argv, "--num_registers", "2", "--img_size", "32", "--attention_blocks", "[0, 2]"])
    report = json.loads((out / "analysis.json").read_text())
    assert report_keys(report) == REPORT_KEYS
    assert report["input"] == {"num_images": 3, "height": 32, "width": 32, "grid": [4, 4], "num_patches": 16}
    assert report["model"]["num_registers"] == 2
    for name in ("similarity_vs_depth", "channel_magnitudes_norm1", "pca", "attention_block00", "attention_block02"):
        assert (out / f"{name}.png").stat().st_size > 1000
    advice = json.loads((out / "advice.json").read_text())
    Specialization.parse(advice["spec"]).blocks(3)  # a valid spec for this depth
    printed = capsys.readouterr().out
    assert f"proposed specialization (+{100 * advice['overhead']:.2f} % parameters): {advice['spec']}" in printed
    assert result["advice"].spec == advice["spec"]


def test_a_warm_started_specialized_model_reports_the_same_figures(workspace):
    root, ckpt = workspace
    common = ["--ckpt", str(ckpt), "--data", str(root / "images"), *TINY, "--num_registers", "2", "--img_size", "32"]
    vanilla = run(["analyze", *common, "--out", str(root / "a")])["report"]
    paper = run(["analyze", *common, "--out", str(root / "b"), "--specialization", "paper", "--advise", "false"])
    assert paper["advice"] is None
    assert {k: v for k, v in vanilla.items() if k != "model"} == {
        k: v for k, v in paper["report"].items() if k != "model"
    }


def test_errors_name_the_option_or_file(workspace, capsys):
    root, ckpt = workspace
    base = ["analyze", "--out", str(root / "out"), *TINY, "--num_registers", "2"]
    with pytest.raises(SystemExit):
        run([*base, "--ckpt", str(root / "missing.pth"), "--data", str(root / "images")])
    assert "missing.pth" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run([*base, "--ckpt", str(ckpt), "--data", str(root / "nowhere")])
    assert "--data: image folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["analyze", "--out", str(root / "out"), *TINY, "--ckpt", str(ckpt), "--data", str(root / "images")])
    assert "does not match the model" in capsys.readouterr().err  # registers missing from the model
    with pytest.raises(SystemExit):
        run([*base, "--ckpt", str(ckpt), "--data", str(root / "images"), "--model_kwargs", "{depht: 3}"])
    assert "--model_kwargs: unknown field(s) ['depht']" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "why"), [(b"", "is an empty file"), (b"PK\x03\x04cut", "is truncated or not a torch checkpoint (")]
)
def test_an_unreadable_checkpoint_is_named_with_the_reason(workspace, capsys, content, why):
    root, _ = workspace
    bad = root / "bad.pth"
    bad.write_bytes(content)
    with pytest.raises(SystemExit):
        run(["analyze", "--out", str(root / "out"), *TINY, "--ckpt", str(bad), "--data", str(root / "images")])
    error = capsys.readouterr().err
    assert f"{bad} {why}" in error and "weights_only=False" not in error
