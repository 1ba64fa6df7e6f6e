"""Weighted k-NN classification on L2-normalised features (Wu et al. 2018; DINO / DINOv2 protocol).

For a query ``q`` with its ``k`` most similar training features ``x_j`` (cosine similarity
``s_j``) of labels ``y_j``, the score of class ``c`` is ``sum_j [y_j = c] * exp(s_j / T)``; the
prediction ranks classes by score. DINOv2 uses k in {10, 20, 100, 200} and ``T = 0.07``.
A memory bank sharded over ranks gives one top-k list per shard; :func:`merge_neighbours` keeps the
global top-k of those lists, on which :func:`weighted_vote` gives the same scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class KNNResult:
    k: int
    top1: float  # percent
    top5: float  # percent
    mean_per_class: float  # percent, over the classes present in the queries

    def as_dict(self, prefix: str = "knn") -> dict[str, float]:
        return {
            f"{prefix}/k{self.k}_top1": self.top1,
            f"{prefix}/k{self.k}_top5": self.top5,
            f"{prefix}/k{self.k}_mean_per_class": self.mean_per_class,
        }


def weighted_vote(similarities: Tensor, labels: Tensor, num_classes: int, temperature: float) -> Tensor:
    """Class scores ``[Q, C]``: ``sum_j [y_j = c] exp(s_j / T)`` over the given neighbours ``[Q, k]``."""
    scores = torch.zeros(len(similarities), num_classes, device=similarities.device)
    return scores.scatter_add_(1, labels, (similarities / temperature).exp())


def merge_neighbours(similarities: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Global top-``k`` from per-shard top-k lists ``[S, Q, k']`` -> similarities and labels ``[Q, k]``."""
    similarities = similarities.permute(1, 0, 2).flatten(1)  # [Q, S * k']
    labels = labels.permute(1, 0, 2).flatten(1)
    top = similarities.topk(k, dim=1)
    return top.values, labels.gather(1, top.indices)


def knn_scores(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    k: int,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores ``[Q, C]`` of each query; features are L2-normalised here."""
    if train_features.ndim != 2 or query_features.ndim != 2 or train_features.shape[1] != query_features.shape[1]:
        raise ValueError(
            f"k-NN expects [N, D] train and [Q, D] query features, got {tuple(train_features.shape)} "
            f"and {tuple(query_features.shape)}"
        )
    if len(train_features) != len(train_labels):
        raise ValueError(f"{len(train_features)} train features but {len(train_labels)} labels")
    if not 1 <= k <= len(train_features):
        raise ValueError(f"k={k} must be between 1 and the number of train features ({len(train_features)})")
    num_classes = int(train_labels.max()) + 1 if num_classes is None else num_classes
    train = F.normalize(train_features.float(), dim=1)
    scores = []
    for queries in F.normalize(query_features.float(), dim=1).split(chunk_size):
        similarity, index = (queries @ train.T).topk(k, dim=1)  # [q, k]
        scores.append(weighted_vote(similarity, train_labels[index], num_classes, temperature))  # [q, C]
    return torch.cat(scores)


def knn_classify(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    query_labels: Tensor,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> list[KNNResult]:
    """Top-1, top-5 and mean-per-class accuracy for each ``k`` (larger than the train set: skipped)."""
    num_classes = num_classes or int(max(train_labels.max(), query_labels.max())) + 1
    results = []
    for k in ks:
        if k > len(train_features):
            continue
        scores = knn_scores(train_features, train_labels, query_features, k, temperature, num_classes)
        ranked = scores.topk(min(5, num_classes), dim=1).indices  # [Q, 5]
        correct1 = ranked[:, 0] == query_labels
        correct5 = (ranked == query_labels[:, None]).any(dim=1)
        per_class = [correct1[query_labels == c].float().mean() for c in query_labels.unique()]
        results.append(
            KNNResult(
                k=k,
                top1=100 * correct1.float().mean().item(),
                top5=100 * correct5.float().mean().item(),
                mean_per_class=100 * torch.stack(per_class).mean().item(),
            )
        )
    return results
