"""One analysis run end to end: measure, write ``analysis.json`` and the PNGs, log to loggers.

Shared by ``clsvit analyze`` and the training callback, so both produce the same files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from torch import Tensor, nn

from clsvit_lightning.analysis.figures import make_figures, save_figures
from clsvit_lightning.analysis.recorder import TokenAnalysis, analyze_backbone
from clsvit_lightning.analysis.report import save_report

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
        from clsvit_lightning.analysis.logger_output import log_analysis  # noqa: PLC0415 (needs Lightning)

        log_analysis(loggers, analysis.report, figures, step, log_prefix)
    return analysis, files
