"""Evaluation protocols on frozen features (pure PyTorch): k-NN classification."""

from clsvit_lightning.evaluation.knn import KNNResult, knn_classify

__all__ = ["KNNResult", "knn_classify"]
