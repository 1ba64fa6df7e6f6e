"""Send an analysis to Lightning loggers: scalars to every logger, figures to W&B."""

from __future__ import annotations

from collections.abc import Iterable

from matplotlib.figure import Figure

from clsvit_lightning.analysis.figures import figure_to_array
from clsvit_lightning.analysis.report import scalar_summary


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
