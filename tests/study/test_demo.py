"""The demo end to end at the smallest scale, and the report arithmetic."""

import math

import pytest

from clsvit_lightning.cli import run
from clsvit_lightning.study.pipeline import RunResult
from clsvit_lightning.study.report import markdown_table, mean_std, write_report


def result(spec, seed, miou, knn):
    overhead = 0.08 if spec == "paper" else 0.0
    curves = dict(post_norm1_cls_patch=[0.1, 0.0], pre_norm1_cls_patch=[0.5, 0.4])
    return RunResult(spec, seed, params=1_000_000, overhead=overhead, gflops=0.5, knn_top1=knn, miou=miou, **curves)


def test_mean_and_sample_std():
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0)
    assert math.isnan(mean_std([4.0])[1])


def test_table_and_report(tmp_path):
    results = [result("vanilla", s, 0.30 + 0.01 * s, 40.0) for s in range(3)] + [result("paper", 0, 0.35, 42.0)]
    table = markdown_table(results)
    assert "| `vanilla` | 3 | 1.00 M | +0.00 % | 0.500 | 40.00 ± 0.00 | 31.00 ± 1.00 |" in table
    assert "| `paper` | 1 | 1.00 M | +8.00 % | 0.500 | 42.00 | 35.00 |" in table
    report = write_report(results, tmp_path, "test")
    assert (tmp_path / "scores.png").stat().st_size > 0 and (tmp_path / "similarity_vs_depth.png").stat().st_size > 0
    assert "31.00 ± 1.00" in report.read_text()


def test_demo_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the shipped configs resolve from any folder
    results = run([
        "demo", "--out", str(tmp_path / "demo"), "--data_root", str(tmp_path / "data"), "--pretrain_epochs", "1",
        "--probe_steps", "4", "--num_train", "40", "--num_val", "12", "--num_workers", "0", "--progress_bar", "false",
        "--specializations", "[vanilla, paper]",
    ])  # fmt: skip
    assert [r.specialization for r in results] == ["vanilla", "paper"]
    assert results[0].gflops == results[1].gflops and results[1].overhead > 0.08
    for r in results:
        assert 0.0 <= r.miou <= 1.0 and 0.0 <= r.knn_top1 <= 100.0 and len(r.post_norm1_cls_patch) == 6
    assert (tmp_path / "demo" / "report.md").is_file()
    # Cached: a second call reads the results instead of training again.
    again = run(["demo", "--out", str(tmp_path / "demo"), "--data_root", str(tmp_path / "data"),
                 "--num_workers", "0"])  # fmt: skip
    assert again[0].miou == results[0].miou
