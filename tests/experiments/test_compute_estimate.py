"""The FLOP-based compute estimate: its pieces against hand counts, on the meta device (no training)."""

import pytest

from tests.experiments.conftest import load_script

ESTIMATE = load_script("experiments/paper/compute_estimate.py")


def test_deep_merge_overlays_nested_keys_only():
    base = {"model": {"init_args": {"a": 1, "b": {"c": 2}}}, "x": [1]}
    merged = ESTIMATE.deep_merge(base, {"model": {"init_args": {"b": {"c": 3}}}, "x": [2]})
    assert merged == {"model": {"init_args": {"a": 1, "b": {"c": 3}}}, "x": [2]}
    assert base["model"]["init_args"]["b"]["c"] == 2  # the base is not modified


def test_sliding_windows_count():
    assert ESTIMATE.windows(512, 683, 512, 341) == 2  # (683 - 512) / 341 -> one more window
    assert ESTIMATE.windows(512, 512, 512, 341) == 1
    assert ESTIMATE.windows(300, 300, 512, 341) == 1  # smaller than the crop: one (padded) window
    assert ESTIMATE.windows(1024, 2048, 512, 341) == 3 * 6


def test_head_flops_match_the_mlp_dimensions():
    # 2 FLOPs per multiply-add: d*h + h*h + h*b + b*K for the three-layer head and the prototypes.
    assert ESTIMATE.head_flops_per_token(8, 32, 16, 4) == pytest.approx(2 * (8 * 16 + 16 * 16 + 16 * 4 + 4 * 32))


def test_dinov2_training_flops_exceed_three_student_forwards_plus_teacher():
    config = ESTIMATE.load_configs(["configs/pretrain/dinov2.yaml", "configs/pretrain/vits16_vanilla.yaml"])
    model = ESTIMATE.backbone(config)
    global_crop, local_crop = ESTIMATE.forward_flops(model, 224), ESTIMATE.forward_flops(model, 96)
    backbone_only = 3 * (2 * global_crop + 8 * local_crop) + 2 * global_crop
    total = ESTIMATE.dinov2_flops_per_image(config)
    assert backbone_only < total < 1.5 * backbone_only  # heads add a fraction, not a multiple


def test_specialization_does_not_change_flops():
    paper = ESTIMATE.load_configs(["configs/pretrain/dinov2.yaml", "configs/pretrain/vits16_paper.yaml"])
    vanilla = ESTIMATE.load_configs(["configs/pretrain/dinov2.yaml", "configs/pretrain/vits16_vanilla.yaml"])
    assert ESTIMATE.dinov2_flops_per_image(paper) == ESTIMATE.dinov2_flops_per_image(vanilla)


def test_bad_mfu_is_rejected(capsys):
    with pytest.raises(SystemExit):
        ESTIMATE.main(["--mfu", "1.5"])
    assert "--mfu 1.5" in capsys.readouterr().err


def test_an_epoch_is_dinov2s_1250_iterations_when_the_recipe_limits_it():
    recipe = ESTIMATE.load_configs(["configs/pretrain/dinov2.yaml", "configs/pretrain/vitl14_vanilla.yaml"])
    assert recipe["trainer"]["limit_train_batches"] == 1250
    # ImageNet-1k at 16 GPUs x 32: 2502 batches per pass, capped at 1250 -> 500 x 1250 = DINOv2's 625k.
    assert ESTIMATE.iterations_per_epoch(recipe["trainer"], 1_281_167, 512) == 1250
    assert ESTIMATE.iterations_per_epoch(recipe["trainer"], 1_281_167, 2048) == 625  # a pass is shorter
    assert ESTIMATE.iterations_per_epoch({"max_epochs": 800}, 1_281_167, 2048) == 625  # DeiT III: passes


def test_vitl14_recipe_widens_the_dino_head_only():
    # DINOv2 vitl14.yaml: DINO head bottleneck 384; the separate iBOT head keeps 2048 hidden / 256 bottleneck.
    recipe = ESTIMATE.load_configs(["configs/pretrain/dinov2.yaml", "configs/pretrain/vitl14_paper.yaml"])
    task = recipe["model"]["init_args"]
    assert task["head_bottleneck_dim"] == 384
    assert (task["ibot_head_hidden_dim"], task["ibot_head_bottleneck_dim"]) == (2048, 256)


def test_student_flops_count_the_batch_subset_of_stochastic_depth():
    # ViT-L/14 recipe: drop path 0.4 and 32 images per GPU: the 64 global crops run each block on
    # int(64 * 0.6) = 38 of them; the patch embedding runs on all.
    recipe = ESTIMATE.load_configs(["configs/pretrain/dinov2.yaml", "configs/pretrain/vitl14_paper.yaml"])
    model = ESTIMATE.backbone(recipe)
    full = ESTIMATE.forward_flops(model, 224)
    embed = 2 * 16 * 16 * (3 * 14 * 14) * 1024
    assert ESTIMATE.student_forward_flops(model, 224, 64) == pytest.approx(embed + (full - embed) * 38 / 64)


def test_continue_table_covers_every_release_and_counts_the_frozen_warmup_cheaper():
    result = ESTIMATE.continue_estimate("a100", 0.4)
    runs = result["runs"]
    assert set(runs) == {
        f"continue_{size}_{spec}{reg}"
        for size in ("vits14", "vitb14", "vitl14")
        for spec in ("vanilla", "paper")
        for reg in ("", "+reg4")
    } | {f"continue_dinov3_{size}_{spec}" for size in ("vits16", "vitb16", "vitl16") for spec in ("vanilla", "paper")}
    small = runs["continue_vits14_vanilla"]
    assert (small["iterations"], small["head_warmup_iterations"], small["global_batch"]) == (10_000, 1_250, 1024)
    config = ESTIMATE.load_configs(small["configs"])
    parts = ESTIMATE.dinov2_flop_parts(config)
    full = 3 * (parts["student_backbone"] + parts["student_heads"]) + parts["teacher"]
    frozen = parts["student_backbone"] + 3 * parts["student_heads"] + parts["teacher"]
    assert frozen < full and full == pytest.approx(ESTIMATE.dinov2_flops_per_image(config))
    expected = 1024 * (1_250 * frozen + 8_750 * full) / (312e12 * 0.4) / 3600
    assert small["gpu_hours"] == pytest.approx(expected)
    # Specialization adds parameters, not FLOPs; a continuation is a small fraction of a from-scratch run.
    assert runs["continue_vitl14_paper"]["gpu_hours"] == runs["continue_vitl14_vanilla"]["gpu_hours"]
    assert runs["continue_vitl14_paper"]["overhead_pct"] > 8
    assert runs["continue_vitl14_vanilla"]["gpu_hours"] < 0.05 * result["from_scratch_vitl14_gpu_hours"]


def test_continue_table_prints(capsys):
    ESTIMATE.main(["--table", "continue"])
    out = capsys.readouterr().out
    assert "| `continue_vitb14_paper+reg4` |" in out and "10,000 (1,250)" in out
