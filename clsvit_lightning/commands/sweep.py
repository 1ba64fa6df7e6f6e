"""``clsvit sweep``: run a W&B sweep file's combinations locally, one after another, no W&B server.

    clsvit sweep --sweep experiments/sweeps/specialization.yaml --out outputs/sweep \
        [--base_config A.yaml B.yaml] [--pretrain_args="--data.init_args.root=/datasets/imagenet"]
        [--probe_config SEG.yaml] [--probe_args="--data.init_args.root=/datasets/ade20k"] [--dry_run]

``--base_config`` replaces the ``--config`` files of the sweep's command (e.g. a tiny synthetic
recipe instead of ImageNet); ``--pretrain_args`` adds arguments to it (one shell-quoted string:
write it with ``=``). ``--probe_config`` adds a dense-probe stage per combination, ``--probe_args``
arguments to that stage. Writes
``OUT/results.csv`` (parameters, mIoU, k-NN accuracy, overhead, every other metric) and
``OUT/pareto.png`` (mIoU against parameter overhead).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from jsonargparse import ArgumentParser


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="clsvit sweep", description=__doc__)
    parser.add_argument("--sweep", type=str, required=True, help="W&B sweep YAML (method grid or random)")
    parser.add_argument("--out", type=str, required=True, help="output folder (runs/, results.csv, pareto.png)")
    parser.add_argument("--base_config", type=str, nargs="+", default=None, help="replace the --config files")
    parser.add_argument(
        "--pretrain_args",
        type=str,
        default="",
        help='extra arguments of every pretraining run: "--data.init_args.root=DIR"',
    )
    parser.add_argument("--probe_config", type=str, nargs="+", default=None, help="dense-probe configs (adds a stage)")
    parser.add_argument("--probe_args", type=str, default="", help="extra arguments of every probe run")
    parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random search")
    parser.add_argument("--count", type=int | None, default=None, help="number of runs (random; first N of a grid)")
    parser.add_argument("--rerun", action="store_true", help="run combinations already done again")
    parser.add_argument("--miou_metric", type=str, default="val/mIoU")
    parser.add_argument("--knn_metric", type=str, default="online_knn/k20_top1")
    parser.add_argument("--overhead_metric", type=str, default="backbone/params_overhead_pct")
    return parser


def sweep_main(argv: list[str]) -> list[dict[str, object]]:
    from clsvit_lightning.ops.sweep_config import SweepConfigError, load_sweep  # noqa: PLC0415 (keep --help light)
    from clsvit_lightning.study.sweep import collect, plan_sweep, run_sweep  # noqa: PLC0415

    parser = build_parser()
    cfg = parser.parse_args(argv)
    extra = {}
    for name in ("pretrain_args", "probe_args"):
        try:
            extra[name] = shlex.split(getattr(cfg, name))
        except ValueError as error:  # an unclosed quote
            parser.error(f"--{name}: {error} in {getattr(cfg, name)!r}")
    try:
        config = load_sweep(cfg.sweep)
        runs = plan_sweep(
            config, cfg.out, cfg.base_config, cfg.probe_config, seed=cfg.seed, count=cfg.count,
            **extra,
        )  # fmt: skip
    except SweepConfigError as error:
        parser.error(f"--sweep: {error}")
    for name in ("base_config", "probe_config"):
        missing = [p for p in getattr(cfg, name) or [] if not Path(p).is_file()]
        if missing:
            parser.error(f"--{name}: no such file(s) {missing}")
    if cfg.dry_run:
        for run in runs:
            for stage, command in run.stages.items():
                print(f"# {run.name} [{stage}]\n{shlex.join(command)}")
        print(f"{len(runs)} combination(s); nothing was run (--dry_run)")
        return [{"run": run.name, **run.params} for run in runs]
    run_sweep(runs, sweep_name=config.get("name", Path(cfg.sweep).stem), rerun=cfg.rerun)
    main = [cfg.overhead_metric, cfg.miou_metric, cfg.knn_metric]
    rows = collect(runs, cfg.out, x_metric=cfg.overhead_metric, y_metric=cfg.miou_metric, main_metrics=main)
    print(
        f"wrote {Path(cfg.out) / 'results.csv'}"
        + (f" and {Path(cfg.out) / 'pareto.png'}" if any(r["pareto"] for r in rows) else "")
    )
    return rows
