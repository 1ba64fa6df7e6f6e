"""The CPU proxy study's runner (clsvit_lightning/study/proxy.py) on a fake, instant run_one."""

import json

import pytest

from clsvit_lightning.study.pipeline import RunResult
from clsvit_lightning.study.proxy import NORMS_LS, paired_differences, parse_args, run_proxy

# Made-up scores of a fake pipeline (not measurements): paper is 1 mIoU point above vanilla on every seed.
MIOU = {"vanilla": 0.30, "paper": 0.31, NORMS_LS: 0.30}


def fake_result(spec: str, seed: int) -> RunResult:
    return RunResult(
        specialization=spec,
        seed=seed,
        params=1000,
        overhead=0.08 if spec == "paper" else 0.0,
        gflops=0.4,
        knn_top1=60.0 + seed,
        miou=MIOU[spec] + 0.01 * seed,
        post_norm1_cls_patch=[0.1 * seed, 0.0],
        pre_norm1_cls_patch=[0.5, 0.4],
    )


def make_fake(calls):
    def run_one(spec, seed, settings):
        calls.append((spec, seed))
        return fake_result(spec, seed)  # the real pipeline would also cache <out>/<slug>_seed<k>/result.json

    return run_one


def test_defaults_are_three_seeds_three_specs_under_outputs_proxy():
    args, settings = parse_args([])
    assert args.seeds == [0, 1, 2] and args.specializations == ["vanilla", "paper", NORMS_LS]
    assert settings.out == "outputs/proxy" and settings.data_root == "outputs/proxy/data"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seeds", "0", "0"], "repeated seed"),
        (["--seeds", "0"], "at least 2 seeds"),
        (["--specializations", "paper", "norm1:all"], "'vanilla' is the baseline"),
        (["--pretrain_epochs", "0"], "must be >= 1"),
    ],
)
def test_bad_arguments_are_rejected_with_the_option_named(capsys, argv, message):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_paired_differences_pair_by_seed():
    results = [fake_result(spec, seed) for seed in (0, 1, 2) for spec in ("vanilla", "paper")]
    diff = paired_differences(results)
    assert set(diff) == {"paper"} and diff["paper"]["seeds"] == 3
    mean, std = diff["paper"]["miou"]
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-9)
    assert diff["paper"]["knn_top1"][0] == pytest.approx(0.0)


def test_run_proxy_runs_seed_major_and_writes_the_report(tmp_path):
    calls = []
    out = tmp_path / "proxy"
    results, report = run_proxy(["--seeds", "0", "1", "--out", str(out)], run_one=make_fake(calls))
    assert calls == [(s, seed) for seed in (0, 1) for s in ("vanilla", "paper", NORMS_LS)]
    assert len(results) == 6 and report == out / "report.md"
    text = report.read_text()
    assert "| `paper` | 2 | 0.00 M | +8.00 % |" in text  # the study table (mean ± std over seeds)
    assert "| `paper` | 2 | +1.00 ± 0.00 |" in text  # paired Δ mIoU vs vanilla
    assert (out / "similarity_vs_depth.png").is_file() and (out / "scores.png").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert [r["seed"] for r in saved] == [0, 0, 0, 1, 1, 1]
    assert set(json.loads((out / "timings.json").read_text())) == {
        f"{s}|seed{seed}" for seed in (0, 1) for s in ("vanilla", "paper", NORMS_LS)
    }
