"""Evaluation protocols and metrics (pure PyTorch/torchmetrics): k-NN, segmentation, depth, sliding window."""

from clsvit_lightning.evaluation.depth_metrics import DEPTH_METRICS, DepthMetrics
from clsvit_lightning.evaluation.knn import KNNResult, knn_classify
from clsvit_lightning.evaluation.segmentation_metrics import (
    SegmentationMetrics,
    per_class_rows,
    scores_from_confusion_matrix,
    write_per_class_csv,
)
from clsvit_lightning.evaluation.sliding_window import infer, slide_inference, tta_inference

__all__ = [
    "DEPTH_METRICS",
    "DepthMetrics",
    "KNNResult",
    "SegmentationMetrics",
    "infer",
    "knn_classify",
    "per_class_rows",
    "scores_from_confusion_matrix",
    "slide_inference",
    "tta_inference",
    "write_per_class_csv",
]
