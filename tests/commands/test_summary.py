import pytest

from clsvit_lightning.cli import run
from clsvit_lightning.commands.summary import expand_sizes


def test_summary_reports_overhead_and_equal_flops(capsys):
    rows = run(["summary", "--sizes", "[small]", "--specializations", "[vanilla, paper]"])
    vanilla, paper = rows
    assert vanilla["overhead_pct"] == 0.0 and paper["overhead_pct"] == pytest.approx(8.32, abs=0.01)
    assert vanilla["gflops"] == paper["gflops"]
    assert paper["spec"] == "norm1,ls1,norm2,ls2:0-11;qkv:0-3;final_norm"
    assert "| vit_small/16 | paper | 224 |" in capsys.readouterr().out


def test_summary_rejects_unknown_sizes(capsys):
    with pytest.raises(SystemExit):
        run(["summary", "--sizes", "[huge]"])
    assert "unknown size(s) ['huge']" in capsys.readouterr().err


def test_summary_rejects_bad_specs():
    with pytest.raises(ValueError, match="unknown specialization component 'attn'"):
        run(["summary", "--sizes", "[tiny]", "--specializations", "[attn:all]"])


def test_summary_of_dinov3_sizes(capsys):
    rows = run(["summary", "--sizes", "[dinov3_vits16, dinov3_vit7b16]", "--patch_sizes", "[14, 16]"])
    assert [(r["model"], r["specialization"]) for r in rows] == [
        ("dinov3_vits16", "vanilla"),
        ("dinov3_vits16", "paper"),
        ("dinov3_vit7b16", "vanilla"),
        ("dinov3_vit7b16", "paper"),
    ]  # DINOv3 fixes its patch size: one row per specialization
    small, small_paper, _, big_paper = rows
    assert small["params_M"] == pytest.approx(21.60, abs=0.01) and small["gflops"] == small_paper["gflops"]
    assert small_paper["overhead_pct"] == pytest.approx(8.34, abs=0.01)
    assert big_paper["overhead_pct"] == pytest.approx(9.76, abs=0.01)  # blocks of 10 D^2 (SwiGLU ratio 3), not 12 D^2
    assert "| dinov3_vits16 | paper | 224 |" in capsys.readouterr().out


def test_summary_dinov3_stands_for_every_released_size():
    assert expand_sizes(["small", "dinov3"])[:3] == ["small", "dinov3_vits16", "dinov3_vits16plus"]
    assert len(expand_sizes(["dinov3"])) == 7
