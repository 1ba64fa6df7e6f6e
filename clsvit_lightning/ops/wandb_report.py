"""Write a sweep combination's probe metrics into its pretraining's W&B run (the sweep's ``report`` stage).

    python -m clsvit_lightning.ops.wandb_report RUN_DIR

``RUN_DIR/pretrain/results.json`` (``ResultsFile``) names the pretraining's W&B run: id, project,
entity, mode and folder. This resumes that run (``wandb.init(id=..., resume="allow")``, same mode,
same folder) and logs, in one step and into the summary:

- the probe's metrics (``RUN_DIR/probe/results.json``): ``val/*`` as they are (``val/mIoU`` is the
  sweep's metric), the others as ``probe/<name>``;
- the pretraining's ``online_knn/*`` and ``backbone/*`` (parameter overhead, GFLOPs) again, so the
  summary of the resumed run holds all three kinds even offline, where a resumed run is a second
  ``offline-run-*-<id>`` folder (``wandb sync`` uploads the folders of one id in order, as one run).

Without a recorded W&B run (a pretraining without the W&B overlay) it logs nothing and exits 0.
Under ``wandb agent`` the environment also carries ``WANDB_SWEEP_ID`` and ``WANDB_RUN_ID``: the
resumed run is the agent's run.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from clsvit_lightning.ops.results import RESULTS_NAME, read_results

PRETRAIN_PREFIXES = ("online_knn/", "backbone/")


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def report_metrics(run_dir: str | Path) -> dict[str, Any]:
    """What the report logs: probe ``val/*`` as is, other probe metrics as ``probe/*``, pretraining k-NN/overhead."""
    run_dir = Path(run_dir)
    pretrain, probe = read_results(run_dir / "pretrain"), read_results(run_dir / "probe")
    if not probe:
        raise FileNotFoundError(f"no {RESULTS_NAME} in {run_dir / 'probe'}: the probe stage did not finish")
    metrics: dict[str, Any] = {}
    for key, value in _finite(probe.get("metrics", {})).items():
        if key.startswith("backbone/"):
            continue  # the same backbone: the pretraining's values below
        metrics[key if key.startswith("val/") else f"probe/{key}"] = value
    for key, value in _finite(pretrain.get("metrics", {})).items():
        if key.startswith(PRETRAIN_PREFIXES):
            metrics[key] = value
    metrics["probe/global_step"] = probe.get("global_step", 0)
    return metrics


def report(run_dir: str | Path) -> dict[str, Any]:
    """Resume the pretraining's W&B run and log :func:`report_metrics`; returns what was logged (or ``{}``)."""
    run_dir = Path(run_dir)
    recorded = read_results(run_dir / "pretrain").get("wandb")
    if not recorded:
        print(f"wandb_report: {run_dir / 'pretrain' / RESULTS_NAME} names no W&B run; nothing to report")
        return {}
    metrics = report_metrics(run_dir)
    import wandb  # noqa: PLC0415

    run = wandb.init(
        id=recorded["id"],
        resume="allow",
        project=recorded.get("project"),
        entity=recorded.get("entity") or None,
        dir=recorded.get("dir"),
        mode=recorded.get("mode") or None,
        name=recorded.get("name"),
        group=recorded.get("group"),
        tags=recorded.get("tags") or None,
    )
    try:
        run.log(metrics)
        run.summary.update(metrics)
        probe = read_results(run_dir / "probe")
        if probe.get("checkpoint"):
            run.summary["probe/checkpoint"] = probe["checkpoint"]
    finally:
        run.finish()
    print(json.dumps({"wandb_run": recorded["id"], "mode": recorded.get("mode"), "logged": metrics}, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        raise SystemExit(__doc__)
    try:
        report(argv[0])
    except FileNotFoundError as error:
        raise SystemExit(f"wandb_report: {error}") from None


if __name__ == "__main__":
    main()
