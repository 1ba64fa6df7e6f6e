"""``clsvit sweep-run``: one sweep combination end to end: pretrain, probe the last checkpoint, report to W&B.

    clsvit sweep-run --config pretrain/dinov2 --config pretrain/vits16_vanilla --config logging/wandb \\
        --probe_config dense/ade20k_linear [--run_dir DIR] [--dry_run] \\
        --model.backbone.specialization=paper --data.root=/datasets/imagenet --probe.data.root=/datasets/ade20k

What a W&B sweep's ``command:`` runs (``experiments/sweeps/specialization.yaml``): ``wandb agent``
appends the combination as ``--key=value`` (``${args}``). Three stages, each a subprocess of the
study engine (``study/engine.py``, ``study/sweep.py``: the same stages as ``clsvit sweep`` runs locally):

1. ``pretrain``: ``clsvit fit`` with every argument that is not one of the options below (configs,
   overrides, the sweep's parameters). With the W&B overlay it logs to the agent's run
   (``WANDB_RUN_ID``), online k-NN and the parameter overhead included.
2. ``probe``: ``clsvit fit`` of ``--probe_config`` on the pretraining's last checkpoint, with the
   pretraining's ``--model.backbone.*`` arguments (same architecture) and every
   ``--probe.<key>=<value>`` as ``--<key>=<value>`` (``--probe.data.root=/datasets/ade20k``). It logs
   no W&B run of its own.
3. ``report``: resumes the pretraining's W&B run (its id from ``results.json``) and logs the probe's
   ``val/*`` metrics (``val/mIoU``, the sweep's metric) unprefixed, its other metrics as ``probe/*``,
   and the k-NN accuracy and parameter overhead again, so the run's summary holds all of them.

Stages write ``RUN_DIR/<stage>/`` and ``RUN_DIR/<stage>.log``; a finished stage (``<stage>.done``) is
not run again when the same ``--run_dir`` is used. ``--run_dir`` defaults to
``outputs/sweep_runs/<WANDB_SWEEP_ID>/<WANDB_RUN_ID>`` under the agent, else
``outputs/sweep_runs/local/<hash of the arguments>``. Exits 1 when a stage fails.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
from pathlib import Path


def default_run_dir(argv: list[str], environ: dict[str, str] | None = None) -> Path:
    """``outputs/sweep_runs/<sweep id>/<run id>`` under ``wandb agent``, else a folder named by the arguments."""
    env = os.environ if environ is None else environ
    root = Path("outputs/sweep_runs")
    if env.get("WANDB_RUN_ID"):
        return root / (env.get("WANDB_SWEEP_ID") or "no-sweep") / env["WANDB_RUN_ID"]
    return root / "local" / hashlib.sha1("\0".join(argv).encode()).hexdigest()[:12]


def sweep_run_main(argv: list[str]) -> dict[str, object]:
    from clsvit_lightning.study.engine import CLSVIT, Run, run_stages  # noqa: PLC0415 (keep `clsvit --help` light)
    from clsvit_lightning.study.sweep import backbone_args, parse_sweep_run_args, plan_stages  # noqa: PLC0415

    try:
        parsed = parse_sweep_run_args(argv)
    except ValueError as error:
        raise SystemExit(f"clsvit sweep-run: {error}") from None
    if parsed.help:
        print(__doc__)
        return {}
    if not any(a == "--config" or a.startswith("--config=") for a in parsed.fit_args):
        raise SystemExit("clsvit sweep-run: no --config for the pretraining (e.g. --config pretrain/dinov2 ...)")
    if not parsed.probe_configs:
        print("clsvit sweep-run: no --probe_config: pretraining only, no val/mIoU", file=sys.stderr)
    run_dir = Path(parsed.run_dir) if parsed.run_dir else default_run_dir(argv)
    stages, env = plan_stages(
        [*CLSVIT, "fit", *parsed.fit_args], run_dir, parsed.probe_configs, backbone_args(parsed.fit_args),
        parsed.probe_args,
    )  # fmt: skip
    params = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    run = Run(0, run_dir.name, params, run_dir, stages, env=env)
    if parsed.dry_run:
        for stage, command in stages.items():
            print(f"# [{stage}] {' '.join(f'{k}={v}' for k, v in env.get(stage, {}).items())}\n{shlex.join(command)}")
        return {"run_dir": str(run_dir), "stages": stages, "status": "dry run"}
    print(f"clsvit sweep-run: stages {', '.join(stages)} in {run_dir}", flush=True)
    run_stages(run, environ=dict(os.environ))
    print(f"clsvit sweep-run: {run.status}", flush=True)
    for stage in stages:  # the agent shows the process output: end with the failed stage's log
        log = run_dir / f"{stage}.log"
        if run.status.startswith(f"failed: {stage}") and log.is_file():
            print("".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:]), file=sys.stderr)
    if run.status.startswith("failed"):
        raise SystemExit(1)
    return {"run_dir": str(run_dir), "stages": stages, "status": run.status}
