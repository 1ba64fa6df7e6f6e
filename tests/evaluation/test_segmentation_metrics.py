"""Dataset-level mIoU (mmseg protocol) against NumPy, on one process and split across two gloo ranks."""

import csv
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from clsvit_lightning.evaluation.segmentation_metrics import (
    SegmentationMetrics,
    format_per_class_table,
    per_class_rows,
    scores_from_confusion_matrix,
    write_per_class_csv,
)
from clsvit_lightning.tasks.common import sampler_padding_mask

NUM_CLASSES, IGNORE = 6, 255


def numpy_mmseg_scores(preds, targets, num_classes, ignore=IGNORE):
    """mmseg ``intersect_and_union`` summed over images, then IoU/Acc per class and nan-means."""
    intersect, union, pred_area, label_area = (np.zeros(num_classes) for _ in range(4))
    for pred, target in zip(preds, targets, strict=True):
        keep = target != ignore
        pred, target = pred[keep], target[keep]
        hit = pred[pred == target]
        i = np.bincount(hit, minlength=num_classes)
        p = np.bincount(pred, minlength=num_classes)
        t = np.bincount(target, minlength=num_classes)
        intersect += i
        pred_area += p
        label_area += t
        union += p + t - i
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = intersect / union
        acc = intersect / label_area
    return {
        "mIoU": np.nanmean(iou),
        "mAcc": np.nanmean(acc),
        "aAcc": intersect.sum() / label_area.sum(),
        "iou": iou,
        "acc": acc,
    }


def random_maps(seed, num_images=5, size=(12, 17), absent=(4,)):
    """Random predictions/targets with ~20 % ignored pixels and classes absent from both."""
    rng = np.random.default_rng(seed)
    present = [c for c in range(NUM_CLASSES) if c not in absent]
    targets = rng.choice(present, size=(num_images, *size))
    preds = np.where(rng.random((num_images, *size)) < 0.6, targets, rng.choice(present, size=(num_images, *size)))
    targets[rng.random(targets.shape) < 0.2] = IGNORE
    return preds, targets


def test_miou_and_table_match_numpy_with_ignored_pixels_and_absent_classes():
    preds, targets = random_maps(0)
    metric = SegmentationMetrics(NUM_CLASSES)
    for pred, target in zip(preds, targets, strict=True):  # one image per update: the sums span updates
        metric.update(torch.from_numpy(pred)[None], torch.from_numpy(target)[None])
    expected = numpy_mmseg_scores(preds, targets, NUM_CLASSES)
    scores = metric.compute_all()
    assert metric.compute().item() == pytest.approx(expected["mIoU"], abs=1e-6)  # the torchmetrics macro value
    for name in ("mIoU", "mAcc", "aAcc"):
        assert scores[name].item() == pytest.approx(expected[name], abs=1e-12), name
    np.testing.assert_allclose(scores["per_class_iou"].numpy(), expected["iou"], atol=1e-12)  # NaN where absent
    assert math.isnan(scores["per_class_iou"][4]) and not scores["present"][4]


def test_class_only_predicted_counts_with_iou_zero():
    target = torch.tensor([[[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 0, 1, 2]]])  # class 2 never in the target: union 1, IoU 0, in the mean
    metric = SegmentationMetrics(4)
    metric.update(pred, target)
    scores = metric.compute_all()
    assert scores["per_class_iou"].tolist()[:3] == [1.0, 0.5, 0.0]
    assert scores["mIoU"].item() == pytest.approx(0.5)  # (1 + 0.5 + 0) / 3; class 3 absent
    assert scores["mAcc"].item() == pytest.approx(0.75)  # class 2 has no target pixel: not in mAcc


def test_dataset_level_differs_from_per_image_average():
    # Image A: class 1 small and missed; image B: class 1 large and found.
    target_a = np.zeros((1, 10), dtype=np.int64)
    target_a[0, :1] = 1
    pred_a = np.zeros((1, 10), dtype=np.int64)
    target_b = np.ones((1, 10), dtype=np.int64)
    pred_b = np.ones((1, 10), dtype=np.int64)
    metric = SegmentationMetrics(2)
    metric.update(torch.from_numpy(np.stack([pred_a, pred_b])), torch.from_numpy(np.stack([target_a, target_b])))
    dataset_level = numpy_mmseg_scores([pred_a, pred_b], [target_a, target_b], 2)["mIoU"]
    per_image = np.mean(
        [np.nanmean(numpy_mmseg_scores([p], [t], 2)["iou"]) for p, t in [(pred_a, target_a), (pred_b, target_b)]]
    )
    assert metric.compute_all()["mIoU"].item() == pytest.approx(dataset_level)
    assert abs(dataset_level - per_image) > 0.05


def test_empty_confusion_matrix_gives_zeros_not_nan():
    scores = scores_from_confusion_matrix(torch.zeros(3, 3))
    assert scores["mIoU"].item() == 0.0 and scores["aAcc"].item() == 0.0


def test_ignore_index_inside_the_class_range_is_rejected():
    with pytest.raises(ValueError, match="ignore_index 3 is a class id"):
        SegmentationMetrics(5, ignore_index=3)


def test_per_class_csv_and_text_table(tmp_path):
    metric = SegmentationMetrics(3)
    metric.update(torch.tensor([[[0, 1, 1]]]), torch.tensor([[[0, 1, 255]]]))
    rows = per_class_rows(metric.compute_all(), ["sky", "road", "tree"])
    path = write_per_class_csv(rows, tmp_path / "sub" / "table.csv")
    read = list(csv.DictReader(path.open()))
    assert [r["name"] for r in read] == ["sky", "road", "tree"]
    assert float(read[1]["iou"]) == 1.0 and read[2]["iou"] == ""  # absent class: empty cell, not 0
    text = format_per_class_table(rows)
    assert "road" in text and "100.00" in text
    with pytest.raises(ValueError, match="class_names has 2 entries"):
        per_class_rows(metric.compute_all(), ["a", "b"])


def test_padding_mask_counts_each_sample_once():
    num_samples, world_size = 5, 2  # 6 slots: one repeat on rank 1
    kept = []
    for rank in range(world_size):
        indices = list(DistributedSampler(range(num_samples), num_replicas=world_size, rank=rank, shuffle=False))
        padded = sampler_padding_mask(torch.arange(len(indices)), num_samples, world_size, rank)
        kept += [index for index, is_pad in zip(indices, padded.tolist(), strict=True) if not is_pad]
    assert sorted(kept) == list(range(num_samples))


# ---------------------------------------------------------------------------------------------- two gloo ranks
WORLD_SIZE = 2


def _worker(rank, init_file, preds, targets, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        sampler = DistributedSampler(range(len(preds)), num_replicas=WORLD_SIZE, rank=rank, shuffle=False)
        indices = list(sampler)
        padded = sampler_padding_mask(torch.arange(len(indices)), len(preds), WORLD_SIZE, rank)
        metric = SegmentationMetrics(NUM_CLASSES)
        for index, is_pad in zip(indices, padded.tolist(), strict=True):
            target = torch.from_numpy(targets[index])[None]
            metric.update(torch.from_numpy(preds[index])[None], target.masked_fill(torch.tensor(is_pad), IGNORE))
        scores = metric.compute_all()
        if rank == 0:
            torch.save({k: v for k, v in scores.items()}, out)
    finally:
        dist.destroy_process_group()


def test_ddp_synced_miou_equals_single_process_despite_sampler_padding(tmp_path):
    preds, targets = random_maps(1, num_images=5)  # odd count: the sampler repeats one image
    mp.spawn(_worker, args=(tmp_path / "init", preds, targets, tmp_path / "out.pt"), nprocs=WORLD_SIZE, join=True)
    synced = torch.load(tmp_path / "out.pt", weights_only=True)
    expected = numpy_mmseg_scores(preds, targets, NUM_CLASSES)
    assert synced["mIoU"].item() == pytest.approx(expected["mIoU"], abs=1e-12)
    assert synced["aAcc"].item() == pytest.approx(expected["aAcc"], abs=1e-12)
