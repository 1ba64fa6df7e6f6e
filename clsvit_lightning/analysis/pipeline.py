"""One analysis run end to end: measure, write ``analysis.json`` and the PNGs, log to loggers.

Shared by ``clsvit analyze`` and the training callback, so both produce the same files. Lightning
is imported only when there are loggers to send to.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from matplotlib.figure import Figure
from torch import Tensor, nn

from clsvit_lightning.analysis.figures import figure_to_array, make_figures, save_figures
from clsvit_lightning.analysis.recorder import TokenAnalysis, analyze_backbone
from clsvit_lightning.analysis.report import save_report, scalar_summary

REPORT_FILE = "analysis.json"


def analyze_and_save(
    model: nn.Module,
    images: Tensor,
    out_dir: str | Path,
    attention_blocks: list[int] | None = None,
    top_channels: int = 8,
    outlier_ratio: float = 3.0,
    loggers: Iterable[object] = (),
    step: int | None = None,
    log_prefix: str = "analysis",
) -> tuple[TokenAnalysis, dict[str, Path]]:
    """Analyse ``model`` on ``images [B, 3, H, W]``; write ``<out_dir>/analysis.json`` and ``<name>.png``.

    Returns the analysis and the written files (``"report"`` and one key per figure). With
    ``loggers``, the scalar summary goes to each and the figures to each W&B logger.
    """
    analysis = analyze_backbone(model, images, top_channels=top_channels, outlier_ratio=outlier_ratio)
    figures = make_figures(analysis, images, attention_blocks)
    out_dir = Path(out_dir)
    files = {"report": save_report(analysis.report, out_dir / REPORT_FILE), **save_figures(figures, out_dir)}
    loggers = list(loggers)
    if loggers:
        log_analysis(loggers, analysis.report, figures, step, log_prefix)
    return analysis, files


def log_analysis(
    loggers: Iterable[object], report: dict, figures: dict[str, Figure], step: int | None, prefix: str = "analysis"
) -> int:
    """Log the scalar summary to each logger and the figures to each W&B logger; returns images logged.

    Figures are rendered once, and only when a W&B logger is present (rendering costs time).
    """
    from lightning.pytorch.loggers import WandbLogger  # noqa: PLC0415 (keep the analysis importable without it)

    loggers = list(loggers)
    scalars = scalar_summary(report, prefix)
    for logger in loggers:
        logger.log_metrics(scalars, step=step)
    wandb_loggers = [logger for logger in loggers if isinstance(logger, WandbLogger)]
    if not wandb_loggers:
        return 0
    arrays = {name: figure_to_array(figure) for name, figure in figures.items()}
    for logger in wandb_loggers:
        for name, array in arrays.items():
            logger.log_image(key=f"{prefix}/{name}", images=[array], step=step)
    return len(arrays) * len(wandb_loggers)
