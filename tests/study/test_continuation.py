"""The continuation study's runner and report (clsvit_lightning/study/continuation.py) on fake, instant runs."""

import json

import pytest

from clsvit_lightning.study.continuation import (
    ARMS,
    BEGIN,
    END,
    minimal_detectable,
    parse_args,
    plan_arm,
    run_continuation,
    seeds_needed,
    write_results,
)
from clsvit_lightning.study.pipeline import RunResult
from clsvit_lightning.study.proxy import NORMS_LS

# Made-up scores of fake runs (not measurements): `paper` is 1 mIoU point above vanilla on every seed.
MIOU = {"vanilla": 0.30, "paper": 0.31, NORMS_LS: 0.30}


def fake(spec, seed, miou=None, knn=None):
    return RunResult(
        specialization=spec, seed=seed, params=1000, overhead=0.0, gflops=0.4,
        knn_top1=60.0 + seed if knn is None else knn, miou=MIOU[spec] + 0.01 * seed if miou is None else miou,
        post_norm1_cls_patch=[0.1, 0.0], pre_norm1_cls_patch=[0.5, 0.4],
    )  # fmt: skip


def test_defaults_and_bad_arguments(capsys):
    args, settings = parse_args([])
    assert args.seeds == [0, 1, 2] and settings.study.out == "outputs/continue/base"
    assert settings.head_warmup_epochs < settings.epochs
    for argv, message in [(["--seeds", "0"], "at least 2 distinct seeds"), (["--head_warmup_epochs", "2"], "leave")]:
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert message in capsys.readouterr().err


def test_an_arm_continues_the_exported_base_with_the_continue_overlay(tmp_path):
    _, settings = parse_args(["--out", str(tmp_path)])
    run = plan_arm("paper", 2, settings, tmp_path / "base.pth")
    argv = run.stages["pretrain"]
    assert run.run_dir == tmp_path / "continued" / "paper_seed2"
    assert any(a.endswith("pretrain/continue.yaml") for a in argv)
    assert argv[argv.index("--model.init_args.pretrained") + 1] == str(tmp_path / "base.pth")
    assert argv[argv.index("--model.init_args.backbone.init_args.specialization") + 1] == "paper"
    assert argv[argv.index("--seed_everything") + 1] == "2"
    # The probes read the continued checkpoint, built with the arm's specialization.
    assert "{pretrain_checkpoint}" in run.stages["knn"] and "paper" in run.stages["segmentation"]


def test_resolution_arithmetic():
    assert minimal_detectable(1.0, 3) == pytest.approx(4.303 / 3**0.5)
    assert seeds_needed(1.0, 1.0) == 8  # (2.8 * 1 / 1)^2 = 7.84
    assert seeds_needed(0.0, 1.0) == 2


def test_results_keep_what_lies_outside_the_markers(tmp_path):
    path = tmp_path / "RESULTS.md"
    write_results(path, "first")
    path.write_text("# Title\n\n" + path.read_text() + "\n## Reading\n\nhand-written\n")
    write_results(path, "second")
    text = path.read_text()
    assert text.startswith("# Title") and text.endswith("hand-written\n")
    assert f"{BEGIN}\nsecond\n{END}" in text and "first" not in text


def test_the_protocol_runs_every_arm_per_seed_and_reports(tmp_path):
    calls = []

    def arm(spec, seed, settings, backbone_file):
        calls.append((spec, seed, backbone_file.name))
        return fake(spec, seed)

    results_path = tmp_path / "RESULTS.md"
    base = (fake("vanilla", 0, miou=0.29, knn=58.0), tmp_path / "backbone.pth")
    argv = ["--seeds", "0", "1", "--out", str(tmp_path / "out"), "--results", str(results_path)]
    results, path = run_continuation(argv, run_one_arm=arm, base=base)
    assert calls == [(spec, seed, "backbone.pth") for seed in (0, 1) for spec in ARMS]
    text = path.read_text()
    assert "| before (vanilla base) | 1 | 0.00 M | 58.00 | | 29.00 | |" in text
    assert "| continued `paper` | 2 | 0.00 M | 60.50 ± 0.71 | +2.50 ± 0.71 | 31.50 ± 0.71 | +2.50 ± 0.71 |" in text
    assert "| `paper` | +0.00 ± 0.00 | +0.00, +0.00 | +1.00 ± 0.00 | +1.00, +1.00 |" in text  # paired by seed
    assert (tmp_path / "scores.png").is_file() and (tmp_path / "similarity_vs_depth.png").is_file()
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved[0]["specialization"] == "vanilla" and len(saved) == 1 + 2 * len(ARMS)
