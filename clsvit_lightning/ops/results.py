"""A run folder's metrics, read back: ``results.json`` files and the CSV logger's ``metrics.csv``.

``ResultsFile`` (``callbacks/results_file.py``) writes one ``results.json`` per stage: the final
logged metrics, the backbone's overhead and FLOPs, the checkpoint and the W&B run. The study engine
(``study/engine.py``) and the W&B report stage (``ops/wandb_report.py``) read them.
``read_run_metrics`` also understands the CSV logger's ``metrics.csv`` (last value of every column),
so a run logged only that way is collected too.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

RESULTS_NAME = "results.json"


def read_results(folder: str | Path) -> dict[str, Any]:
    """The ``results.json`` of one stage's folder (``metrics``, ``checkpoint``, ``wandb``...), or ``{}``."""
    path = Path(folder) / RESULTS_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def last_csv_values(path: Path) -> dict[str, float]:
    """Last non-empty value of every numeric column of a CSV logger's ``metrics.csv``."""
    values: dict[str, float] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key, text in row.items():
                if key in ("step", "epoch") or text in ("", None):
                    continue
                try:
                    values[key] = float(text)
                except ValueError:
                    continue
    return values


def read_run_metrics(run_dir: str | Path) -> dict[str, float]:
    """Every metric a run folder holds: ``metrics.csv`` files first, then ``results.json`` (wins).

    Shallower files are read last, so the run's own ``results.json`` overrides what a logger
    folder below it recorded under the same name.
    """
    run_dir = Path(run_dir)
    metrics: dict[str, float] = {}

    def deepest_first(paths):  # noqa: ANN001, ANN202
        return sorted(paths, key=lambda p: (-len(p.parts), str(p)))

    for path in deepest_first(run_dir.rglob("metrics.csv")):
        metrics.update(last_csv_values(path))
    for path in deepest_first(run_dir.rglob(RESULTS_NAME)):
        metrics.update(json.loads(path.read_text()).get("metrics", {}))
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not math.isnan(v)}
