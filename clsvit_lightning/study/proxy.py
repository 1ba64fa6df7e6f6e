"""The CPU-scale proxy of the paper: several specializations x several seeds on the synthetic scenes.

Each (specialization, seed) is one :func:`clsvit_lightning.study.pipeline.run_one` (tiny DINOv2
pretraining, k-NN, linear segmentation probe, token-interaction analysis), cached per run, so an
interrupted study resumes where it stopped. The report adds to the demo's table the *paired*
difference to vanilla per seed (same seed = same data order and the same initial shared weights,
so the seed-to-seed noise partly cancels) and the wall-clock time of every run.

    .venv/bin/python experiments/proxy/run.py [--seeds 0 1 2] [--out outputs/proxy]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from clsvit_lightning.study.pipeline import RESULT_NAME, RunResult, StudySettings, run_folder, write_synthetic_data
from clsvit_lightning.study.report import group, markdown_table, mean_std, write_report

# The `norms` preset spelled out (`paper` without its qkv split: norms and LayerScales in every block + the
# final norm, +0.1 % parameters), so that run folders keep the names of the recorded study.
NORMS_LS = "norm1,norm2,ls1,ls2:all;final_norm"
DEFAULT_SPECIALIZATIONS = ("vanilla", "paper", NORMS_LS)
# Chosen from a measured single run (StudySettings defaults: 4 epochs, 300 probe steps, 1 thread) of 168 s
# on the 2 shared cores of the development machine, ~26 s per pretraining epoch: 3 specs x 3 seeds must
# fit in 60 minutes (<= ~6 min per run), so the pretraining is doubled to 8 epochs (~4.5 min per run).
DEFAULT_PRETRAIN_EPOCHS = 8
DEFAULT_PROBE_STEPS = 300

RunOne = Callable[[str, int, StudySettings], RunResult]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="experiments/proxy/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--specializations", nargs="+", default=list(DEFAULT_SPECIALIZATIONS))
    parser.add_argument("--out", default="outputs/proxy")
    parser.add_argument(
        "--data_root",
        default=None,
        help="synthetic scenes (imagenet/ + ade20k/); default <out>/data, written if absent",
    )
    parser.add_argument("--num_train", type=int, default=640, help="synthetic training images per layout")
    parser.add_argument("--num_val", type=int, default=160, help="synthetic validation images per layout")
    parser.add_argument("--pretrain_epochs", type=int, default=DEFAULT_PRETRAIN_EPOCHS)
    parser.add_argument("--probe_steps", type=int, default=DEFAULT_PROBE_STEPS)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--progress_bar", action="store_true", help="Lightning progress bars (off: cleaner logs)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads. 1 by default: on a 2-core machine shared with other jobs, 2 threads made a "
        "tiny-ViT forward ~100x slower (threads waiting on each other at every op), and the data workers "
        "use the other core anyway",
    )
    return parser


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, StudySettings]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds {args.seeds}: repeated seed")
    if len(args.seeds) < 2:
        # One seed gives no spread, and the point of the proxy is mean ± std.
        parser.error(f"--seeds {args.seeds}: give at least 2 seeds (3 or more for a meaningful std)")
    if "vanilla" not in args.specializations:
        parser.error(f"--specializations {args.specializations}: 'vanilla' is the baseline and must be included")
    if args.pretrain_epochs < 1 or args.probe_steps < 1 or args.threads < 1:
        parser.error("--pretrain_epochs, --probe_steps and --threads must be >= 1")
    data_root = args.data_root or str(Path(args.out) / "data")
    settings = StudySettings(
        data_root=data_root,
        out=args.out,
        pretrain_epochs=args.pretrain_epochs,
        probe_steps=args.probe_steps,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        progress_bar=args.progress_bar,
    )
    return args, settings


def paired_differences(results: list[RunResult], baseline: str = "vanilla") -> dict[str, dict[str, tuple]]:
    """Per specialization: mean ± std over seeds of (spec − baseline) for mIoU (points) and k-NN (points).

    Only seeds present for both are paired; a spec without a common seed is left out.
    """
    by_seed = {r.seed: r for r in group(results).get(baseline, [])}
    out: dict[str, dict[str, tuple]] = {}
    for spec, runs in group(results).items():
        pairs = [(r, by_seed[r.seed]) for r in runs if spec != baseline and r.seed in by_seed]
        if not pairs:
            continue
        miou = [100 * (r.miou - b.miou) for r, b in pairs]
        knn = [r.knn_top1 - b.knn_top1 for r, b in pairs]
        out[spec] = {"seeds": len(pairs), "miou": mean_std(miou), "knn_top1": mean_std(knn)}
    return out


def _signed(mean: float, std: float) -> str:
    return f"{mean:+.2f}" if std != std else f"{mean:+.2f} ± {std:.2f}"  # std is NaN for one pair


def paired_table(results: list[RunResult], baseline: str = "vanilla") -> str:
    lines = [
        f"| specialization | paired seeds | Δ mIoU vs {baseline} (points) | Δ k-NN top-1 vs {baseline} (points) |",
        "|---|---|---|---|",
    ]
    for spec, diff in paired_differences(results, baseline).items():
        lines.append(f"| `{spec}` | {diff['seeds']} | {_signed(*diff['miou'])} | {_signed(*diff['knn_top1'])} |")
    return "\n".join(lines)


def per_run_table(results: list[RunResult], seconds: dict[str, float]) -> str:
    lines = ["| specialization | seed | k-NN top-1 (%) | mIoU (%) | wall-clock (s) |", "|---|---|---|---|---|"]
    for r in results:
        took = seconds.get(run_key(r.specialization, r.seed))
        lines.append(
            f"| `{r.specialization}` | {r.seed} | {r.knn_top1:.2f} | {100 * r.miou:.2f} | "
            f"{'cached' if took is None else f'{took:.0f}'} |"
        )
    return "\n".join(lines)


def run_key(spec: str, seed: int) -> str:
    return f"{spec}|seed{seed}"


def write_proxy_report(
    results: list[RunResult], settings: StudySettings, seconds: dict[str, float], total_seconds: float
) -> Path:
    notes = "\n\n".join([
        "Paired difference to vanilla (same seed: same data order and same initial shared weights):",
        paired_table(results),
        "Per run:",
        per_run_table(results, seconds),
        f"Settings: {settings.pretrain_epochs} pretraining epochs, {settings.probe_steps} probe steps, "
        f"batch {settings.batch_size}, data `{settings.data_root}`. Wall-clock of this invocation: "
        f"{total_seconds / 60:.1f} min (runs read from cache count as 0).",
        "mean ± std is over seeds (sample std). Toy scale: a tiny ViT on procedural scenes, so these numbers "
        "say how the mechanism behaves at this scale, not whether the paper's ImageNet/ADE20K result holds.",
    ])  # fmt: skip
    return write_report(results, Path(settings.out), "CPU proxy study: layer specialization on synthetic scenes", notes)


def run_proxy(argv: Sequence[str] | None = None, run_one: RunOne | None = None) -> tuple[list[RunResult], Path]:
    """Parse ``argv``, write the data if needed, run every (spec, seed), write ``<out>/report.md``."""
    args, settings = parse_args(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run_study(args, settings, run_one)
    finally:
        torch.set_num_threads(previous_threads)  # the caller (a test session, a notebook) keeps its setting


def _run_study(
    args: argparse.Namespace, settings: StudySettings, run_one: RunOne | None
) -> tuple[list[RunResult], Path]:
    start = time.time()
    if run_one is None:
        from clsvit_lightning.study.pipeline import run_one  # noqa: PLC0415 (tests inject a fake)

        write_synthetic_data(settings.data_root, args.num_train, args.num_val)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    timings_path = out / "timings.json"
    # Timings of earlier invocations survive a resume, so the report can still show every run's cost.
    seconds: dict[str, float] = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    results = []
    # Seed-major order: if the study is stopped early, the finished seeds cover every specialization.
    for seed in args.seeds:
        for spec in args.specializations:
            run_start = time.time()
            cached = (run_folder(spec, seed, settings) / RESULT_NAME).is_file()
            results.append(run_one(spec, seed, settings))
            if not cached:
                seconds[run_key(spec, seed)] = time.time() - run_start
                timings_path.write_text(json.dumps(seconds, indent=2))
            print(f"[proxy] {spec} seed {seed}: done ({(time.time() - start) / 60:.1f} min so far)", flush=True)
    (out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    report = write_proxy_report(results, settings, seconds, time.time() - start)
    print("\n" + markdown_table(results) + "\n\n" + paired_table(results))
    print(f"\nreport: {report}  ({(time.time() - start) / 60:.1f} min)")
    return results, report
