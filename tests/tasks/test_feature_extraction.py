"""``clsvit predict --config predict/features``: a checkpoint and a folder in, arrays in folder order out."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from clsvit_lightning.cli import run
from clsvit_lightning.data.datamodules.image_folder import ImageFolderDataModule, collate_images
from clsvit_lightning.data.transforms.tensors import normalize_on_device
from clsvit_lightning.models import VisionTransformer

BACKBONE = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_registers=2, specialization="paper")


def backbone_args() -> list[str]:
    return [f"--model.init_args.backbone.init_args.{key}={value}" for key, value in BACKBONE.items()]


@pytest.fixture
def folder_and_weights(tmp_path):
    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    for i in range(7):  # nested folders and mixed-case extensions, as real folders come
        path = images / f"group{i % 2}" / f"img{i}.{'JPG' if i == 3 else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 255, (40 + i, 48, 3), dtype=np.uint8))
    torch.manual_seed(0)
    backbone = VisionTransformer(**BACKBONE, layerscale_init=0.5)
    for p in backbone.parameters():  # away from the init, so a wrong load cannot hide
        p.data.add_(0.1 * torch.randn_like(p))
    weights = tmp_path / "backbone.pth"
    torch.save({"model": backbone.state_dict(), "backbone_config": backbone.config}, weights)
    return images, weights, backbone.eval()


def expected_features(images: Path, backbone: VisionTransformer) -> tuple[list[str], dict[str, np.ndarray]]:
    data = ImageFolderDataModule(str(images), crop_size=32, resize_size=36, num_workers=0)
    dataset = data.files and data.dataset
    batch = normalize_on_device(collate_images([dataset[i] for i in range(len(dataset))]))
    with torch.no_grad():
        out = backbone.forward_features(batch["image"])
    names = [str(f.relative_to(images)) for f in data.files]
    return names, {
        "cls": out["x_norm_clstoken"].numpy(),
        "registers": out["x_norm_regtokens"].numpy(),
        "patch_mean": out["x_norm_patchtokens"].mean(1).numpy(),
        "patches": out["x_norm_patchtokens"].numpy(),
    }


def predict_args(images: Path, weights: Path, out: Path, batch_size: int) -> list[str]:
    return [
        "predict", "--config", "predict/features", *backbone_args(), "--model.init_args.pretrained", str(weights),
        "--model.init_args.patch_tokens", "true", "--data.init_args.root", str(images),
        "--data.init_args.crop_size", "32", "--data.init_args.resize_size", "36", "--data.init_args.num_workers", "0",
        f"--data.init_args.batch_size={batch_size}", "--trainer.accelerator", "cpu", "--trainer.precision", "32-true",
        "--trainer.callbacks.init_args.output_dir", str(out), "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip


def assert_features(out: Path, names: list[str], expected: dict[str, np.ndarray]) -> None:
    assert (out / "files.txt").read_text().split() == names
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num_samples"] == 7 and meta["backbone"]["num_registers"] == 2
    for name, want in expected.items():
        got = np.load(out / f"{name}.npy")
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
    assert not (out / ".shards").exists()


def test_predict_writes_every_feature_in_folder_order(folder_and_weights, tmp_path):
    images, weights, backbone = folder_and_weights
    names, expected = expected_features(images, backbone)
    assert len(names) == 7 and "group1/img3.JPG" in names
    run(predict_args(images, weights, tmp_path / "features", batch_size=3))  # 3 + 3 + 1: a ragged last batch
    assert_features(tmp_path / "features", names, expected)


def test_predict_on_two_ranks_writes_the_same_arrays(folder_and_weights, tmp_path):
    images, weights, backbone = folder_and_weights
    names, expected = expected_features(images, backbone)
    args = predict_args(images, weights, tmp_path / "features", batch_size=2)
    args += ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
    done = subprocess.run(
        # The console script: Lightning's DDP launcher starts rank 1 by re-running this command line.
        [str(Path(sys.executable).parent / "clsvit"), *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert_features(tmp_path / "features", names, expected)


def test_predict_needs_the_weights(folder_and_weights, tmp_path, capsys):
    images, _, _ = folder_and_weights
    with pytest.raises(SystemExit):
        run(["predict", "--config", "predict/features", *backbone_args(), "--data.init_args.root", str(images),
             "--trainer.accelerator", "cpu"])  # fmt: skip
    assert "required: pretrained" in capsys.readouterr().err


def test_a_missing_folder_is_named(tmp_path):
    data = ImageFolderDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere is not a folder"):
        data.setup("predict")


def test_a_missing_folder_through_the_cli_is_one_line(folder_and_weights, tmp_path):
    _, weights, _ = folder_and_weights
    with pytest.raises(SystemExit, match=r"^clsvit predict: data.root .*nowhere is not a folder"):
        run(predict_args(tmp_path / "nowhere", weights, tmp_path / "features", batch_size=2))
