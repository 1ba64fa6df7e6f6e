"""The specialization advisor ranks by separation + channel specificity and respects its budget."""

import pytest
import torch

from clsvit_lightning.analysis import advise, analyze_backbone
from clsvit_lightning.models import Specialization, count_parameters
from tests.analysis.tiny import tiny_vit, trained_vit


def norm_entry(gap_before, gap_after, specificity):
    """A norm entry with patch_patch fixed at 0.5 and the given gaps (patch_patch - cls_patch)."""
    return {
        "pre": {"cls_patch": 0.5 - gap_before, "patch_patch": 0.5},
        "post": {"cls_patch": 0.5 - gap_after, "patch_patch": 0.5},
        "channels": {"mean_abs_specificity": specificity},
    }


def constructed_report(dim=10, num_parameters=10_000):
    blocks = [
        {"index": 0, "norm1": norm_entry(0.1, 0.9, 0.3), "norm2": norm_entry(0.1, 0.2, 0.1)},
        {"index": 1, "norm1": norm_entry(0.1, 0.5, 0.2), "norm2": norm_entry(0.3, 0.1, 0.0)},
        {"index": 2, "norm1": norm_entry(0.1, 0.0, 0.01), "norm2": norm_entry(0.1, 0.1, 0.0)},
    ]
    model = {"embed_dim": dim, "depth": 3, "qkv_bias": True, "num_parameters": num_parameters}
    return {"model": model, "blocks": blocks, "final_norm": norm_entry(0.0, 0.4, 0.2)}


def test_ranking_rests_on_separation_gain_plus_channel_specificity():
    advice = advise(constructed_report(), max_overhead=0.045)  # room for the norms and one qkv
    first = advice.ranking[0]
    assert (first.component, first.block) == ("qkv", 0)  # gap after norm1 0.9 + specificity 0.3
    assert first.score == pytest.approx(1.2)
    norm1_block0 = next(c for c in advice.ranking if (c.component, c.block) == ("norm1", 0))
    assert norm1_block0.score == pytest.approx(0.8 + 0.3)
    assert norm1_block0.evidence["separation"] == pytest.approx(0.8)
    norm2_block1 = next(c for c in advice.ranking if (c.component, c.block) == ("norm2", 1))
    assert norm2_block1.score == pytest.approx(0.0)  # the norm reduced the gap: no evidence
    assert [c.score for c in advice.ranking] == sorted((c.score for c in advice.ranking), reverse=True)


def test_selection_threshold_budget_and_spec_string():
    advice = advise(constructed_report(), max_overhead=0.045, keep_fraction=0.25)
    # norms scoring >= 0.25 * 1.1: norm1 0 (1.1), 1 (0.6), final (0.6); norm2 0 (0.2) and the rest are out.
    assert advice.spec == "norm1,ls1:0-1;qkv:0;final_norm"
    assert Specialization.parse(advice.spec).blocks(3)["qkv"] == frozenset({0})
    expected_parameters = 3 * 20 + 2 * 10 + 330  # norms (2D), LayerScales (D), one qkv (3D^2 + 3D)
    assert advice.overhead == pytest.approx(expected_parameters / 10_000)
    assert "proposed specialization" in advice.format()
    assert advise(constructed_report(), max_overhead=0.0).spec == "vanilla"


def test_the_proposal_builds_a_model_with_the_predicted_overhead():
    report = analyze_backbone(trained_vit(), torch.randn(2, 3, 32, 32)).report
    advice = advise(report, max_overhead=0.2)
    model = tiny_vit(advice.spec)
    assert count_parameters(model).overhead == pytest.approx(advice.overhead, rel=1e-6)
    assert advice.to_dict()["ranking"][0].keys() >= {"component", "block", "score", "evidence", "selected"}
