"""The JSON report: one documented key set for every model, valid JSON on disk, logger scalars."""

import json
import math

import pytest
import torch

from clsvit_lightning.analysis import REPORT_KEYS, analyze_backbone, report_keys, save_report, scalar_summary
from clsvit_lightning.analysis import report as report_module
from tests.analysis.tiny import tiny_vit, trained_vit


@pytest.mark.parametrize(
    "spec, num_registers, size",
    [("vanilla", 0, (32, 32)), ("paper", 4, (24, 40)), ("paper;registers_path:patch", 1, (32, 32))],
)
def test_the_key_set_is_the_same_for_every_model_and_input(spec, num_registers, size):
    report = analyze_backbone(tiny_vit(spec, num_registers), torch.randn(2, 3, *size)).report
    assert report_keys(report) == REPORT_KEYS


NORM_ENTRY = [
    *(f"{stage}.{name}" for stage in ("pre", "post", "paths.prefix", "paths.patch")
      for name in ("cls_patch", "patch_patch", "register_patch")),
    "path_weight_cosine",
    *(f"{group}.{name}" for group in ("channels", "channels_pre")
      for name in ("cls_magnitude", "patch_magnitude", "specificity", "cls_specific", "patch_specific",
                   "mean_abs_specificity")),
]  # fmt: skip
PINNED_KEYS = {
    "schema_version",
    "model.specialization", "model.patch_size", "model.embed_dim", "model.depth", "model.num_heads",
    "model.qkv_bias", "model.num_registers", "model.num_prefix_tokens", "model.num_prefix_path_tokens",
    "model.num_parameters", "model.position_encoding", "model.ffn_layer",
    "input.num_images", "input.height", "input.width", "input.grid", "input.num_patches",
    "settings.top_channels", "settings.outlier_ratio",
    "blocks[].index",
    "blocks[].attention.entropy", "blocks[].attention.entropy_normalized", "blocks[].attention.patch_mass",
    "blocks[].token_norms.cls", "blocks[].token_norms.registers", "blocks[].token_norms.patch_mean",
    "blocks[].token_norms.patch_median", "blocks[].token_norms.patch_max", "blocks[].token_norms.outliers",
    "blocks[].token_norms.outliers_per_image", "blocks[].token_norms.outlier_fraction",
    *(f"{norm}.{key}" for norm in ("blocks[].norm1", "blocks[].norm2", "final_norm") for key in NORM_ENTRY),
}  # fmt: skip


def test_the_key_set_is_pinned():
    # Changing a key breaks readers of saved reports: bump SCHEMA_VERSION and update the docs too.
    assert REPORT_KEYS == PINNED_KEYS


def test_every_key_is_documented_in_the_module_docstring():
    doc = report_module.__doc__
    norm_entry = {key.split(".", 1)[1] for key in REPORT_KEYS if key.startswith("final_norm.")}
    for key in REPORT_KEYS - {f"final_norm.{k}" for k in norm_entry}:
        if ".norm1." in key or ".norm2." in key:
            continue  # norm entries are documented once, below
        leaf = key.rsplit(".", 1)
        assert f"`{key}`" in doc or f"`.{leaf[-1]}`" in doc, key
    for key in norm_entry:
        stage, _, name = key.rpartition(".")
        assert f"`{key}`" in doc or f"`{stage}.*`" in doc or f"`.{name}`" in doc, key


def test_saved_report_is_valid_json_with_nan_as_null(tmp_path):
    report = analyze_backbone(trained_vit(num_registers=2), torch.randn(1, 3, 8, 8)).report  # 1 patch: no pairs
    assert math.isnan(report["blocks"][0]["norm1"]["pre"]["patch_patch"])
    path = save_report(report, tmp_path / "deep" / "analysis.json")
    loaded = json.loads(path.read_text())
    assert loaded["blocks"][0]["norm1"]["pre"]["patch_patch"] is None
    assert report_keys(loaded) == REPORT_KEYS


def test_scalar_summary_averages_over_blocks():
    report = analyze_backbone(trained_vit(), torch.randn(2, 3, 32, 32)).report
    summary = scalar_summary(report, prefix="x")
    blocks = report["blocks"]
    expected = sum(b["norm1"]["post"]["cls_patch"] for b in blocks) / len(blocks)
    assert summary["x/norm1_post_cls_patch"] == pytest.approx(expected)
    assert summary["x/final_norm_post_patch_patch"] == report["final_norm"]["post"]["patch_patch"]
    assert all(isinstance(value, float) for value in summary.values())
