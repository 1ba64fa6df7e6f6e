"""Depth metrics (AbsRel, RMSE, delta1, ...) against NumPy, per image and pooled over pixels."""

import numpy as np
import pytest
import torch

from clsvit_lightning.evaluation.depth_metrics import DEPTH_METRICS, DepthMetrics


def numpy_metrics(pred, gt):
    """The depth toolbox's ``metrics()`` on the valid pixels of one image (or of pooled pixels)."""
    thresh = np.maximum(gt / pred, pred / gt)
    return {
        "abs_rel": np.mean(np.abs(gt - pred) / gt),
        "sq_rel": np.mean((gt - pred) ** 2 / gt),
        "rmse": np.sqrt(np.mean((gt - pred) ** 2)),
        "rmse_log": np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2)),
        "log10": np.mean(np.abs(np.log10(gt) - np.log10(pred))),
        "delta1": np.mean(thresh < 1.25),
        "delta2": np.mean(thresh < 1.25**2),
        "delta3": np.mean(thresh < 1.25**3),
    }


@pytest.fixture
def batches():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 9.0, size=(4, 9, 11))
    pred = gt * rng.uniform(0.6, 1.5, size=gt.shape)
    valid = rng.random(gt.shape) < 0.7
    gt[~valid & (rng.random(gt.shape) < 0.5)] = 0.0  # unmeasured pixels
    valid[2] = False  # an image without a valid pixel: skipped, not a zero score
    return pred, gt, valid


@pytest.mark.parametrize("average", ["image", "pixel"])
def test_metrics_match_numpy(batches, average):
    pred, gt, valid = batches
    metric = DepthMetrics(average=average)
    for start in (0, 2):  # two updates: the sums span batches
        sl = slice(start, start + 2)
        metric.update(torch.from_numpy(pred[sl]).float(), torch.from_numpy(gt[sl]).float(), torch.from_numpy(valid[sl]))
    scores = metric.compute()
    mask = valid & (gt > 0)
    gt32, pred32 = gt.astype(np.float32).astype(np.float64), pred.astype(np.float32).astype(np.float64)
    if average == "image":
        per_image = [numpy_metrics(pred32[i][mask[i]], gt32[i][mask[i]]) for i in range(4) if mask[i].any()]
        expected = {name: np.mean([m[name] for m in per_image]) for name in DEPTH_METRICS}
    else:
        expected = numpy_metrics(pred32[mask], gt32[mask])
    for name in DEPTH_METRICS:
        assert scores[name].item() == pytest.approx(expected[name], rel=1e-9), name


def test_per_image_and_pixel_averages_differ(batches):
    pred, gt, valid = (torch.from_numpy(a) for a in batches)
    results = {}
    for average in ("image", "pixel"):
        metric = DepthMetrics(average=average)
        metric.update(pred, gt, valid)
        results[average] = metric.compute()["rmse"].item()
    assert results["image"] != pytest.approx(results["pixel"], rel=1e-6)


def test_bad_inputs_are_rejected():
    metric = DepthMetrics()
    with pytest.raises(ValueError, match="must have the same shape"):
        metric.update(torch.ones(1, 4, 4), torch.ones(1, 4, 5), torch.ones(1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="must be > 0 on valid pixels"):
        metric.update(torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="average must be 'image' or 'pixel'"):
        DepthMetrics(average="batch")
