"""Pareto front of (cost, score) points, e.g. mIoU against parameter overhead, and its plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower-or-equal cost **and** higher-or-equal score,
    better in at least one. Sorted by cost; identical points are all kept.

    ``points`` are ``(cost, score)`` pairs: cost is minimised (overhead), score maximised (mIoU).
    """
    front = []
    for i, (cost, score) in enumerate(points):
        dominated = any(
            c <= cost and s >= score and (c < cost or s > score) for j, (c, s) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def plot_pareto(
    points: Sequence[tuple[float, float]],
    labels: Sequence[str],
    path: str | Path,
    x_label: str = "parameter overhead (%)",
    y_label: str = "mIoU",
) -> list[int]:
    """Scatter of every run, the front as a staircase, labels on the front's points; returns the front."""
    import matplotlib  # noqa: PLC0415 (plotting only when asked)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    front = pareto_front(points)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.scatter([p[0] for p in points], [p[1] for p in points], color="0.6", label="runs", zorder=2)
    if front:
        xs, ys = [points[i][0] for i in front], [points[i][1] for i in front]
        axis.step(xs, ys, where="post", color="tab:red", zorder=1)
        axis.scatter(xs, ys, color="tab:red", label="Pareto front", zorder=3)
        for i in front:
            axis.annotate(labels[i], points[i], textcoords="offset points", xytext=(4, 4), fontsize=7)
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return front
