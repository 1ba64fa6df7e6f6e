"""Tables and plots of a study: mean ± std over seeds per specialization, similarity curves."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from clsvit_lightning.study.pipeline import RunResult  # noqa: E402


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def group(results: list[RunResult]) -> dict[str, list[RunResult]]:
    groups: dict[str, list[RunResult]] = defaultdict(list)
    for result in results:
        groups[result.specialization].append(result)
    return dict(groups)


def _fmt(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.2f}" if len(values) < 2 else f"{mean:.2f} ± {std:.2f}"


def markdown_table(results: list[RunResult]) -> str:
    lines = [
        "| specialization | seeds | params | overhead | GFLOPs/img | k-NN top-1 (%) | linear seg. mIoU (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec, runs in group(results).items():
        first = runs[0]
        lines.append(
            f"| `{spec}` | {len(runs)} | {first.params / 1e6:.2f} M | +{100 * first.overhead:.2f} % | "
            f"{first.gflops:.3f} | {_fmt([r.knn_top1 for r in runs])} | {_fmt([100 * r.miou for r in runs])} |"
        )
    return "\n".join(lines)


def plot_similarity(results: list[RunResult], path: Path) -> Path:
    """Post-norm1 [CLS]–patch cosine similarity against depth, mean over seeds, per specialization."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for spec, runs in group(results).items():
        depth = len(runs[0].post_norm1_cls_patch)
        post = [sum(r.post_norm1_cls_patch[i] for r in runs) / len(runs) for i in range(depth)]
        pre = [sum(r.pre_norm1_cls_patch[i] for r in runs) / len(runs) for i in range(depth)]
        (line,) = ax.plot(range(depth), post, marker="o", label=f"{spec}: after norm1")
        ax.plot(range(depth), pre, linestyle="--", color=line.get_color(), label=f"{spec}: before norm1")
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_xlabel("block")
    ax.set_ylabel("[CLS]–patch cosine similarity")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_scores(results: list[RunResult], path: Path) -> Path:
    """mIoU and k-NN accuracy per specialization (mean over seeds, error bars = std)."""
    groups = group(results)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, (name, get) in zip(
        axes,
        (("linear seg. mIoU (%)", lambda r: 100 * r.miou), ("k-NN top-1 (%)", lambda r: r.knn_top1)),
        strict=True,
    ):
        stats = [mean_std([get(r) for r in runs]) for runs in groups.values()]
        errors = [0.0 if s != s else s for _, s in stats]  # NaN (one seed) -> no bar
        ax.bar(range(len(groups)), [m for m, _ in stats], yerr=errors, capsize=4, color="tab:blue")
        ax.set_xticks(range(len(groups)), list(groups), rotation=15, fontsize=7)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(results: list[RunResult], out: Path, title: str, notes: str = "") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    similarity = plot_similarity(results, out / "similarity_vs_depth.png")
    scores = plot_scores(results, out / "scores.png")
    text = (
        f"# {title}\n\n{markdown_table(results)}\n\n{notes}\n\n"
        f"![scores]({scores.name})\n\n![similarity]({similarity.name})\n"
    )
    path = out / "report.md"
    path.write_text(text)
    return path
