import pytest

from clsvit_lightning.cli import run


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
