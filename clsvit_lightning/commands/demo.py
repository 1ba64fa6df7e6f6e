"""``clsvit demo``: the main job end to end on the embedded synthetic scenes, on a CPU.

Writes the synthetic data (ImageNet and ADE20K layouts), pretrains a vanilla and a `paper`
specialized tiny ViT with the DINOv2 recipe, measures k-NN accuracy and a linear segmentation
probe's mIoU for each, runs the token-interaction analysis, prints a table and writes
``report.md`` and plots under ``--out``. A toy scale: the numbers show the pipeline, not the paper.
"""

from __future__ import annotations

import time
from pathlib import Path

from jsonargparse import ArgumentParser


def demo_main(argv: list[str]) -> list:
    from clsvit_lightning.study.pipeline import StudySettings, run_one, write_synthetic_data  # noqa: PLC0415 (fast --help)
    from clsvit_lightning.study.report import markdown_table, write_report  # noqa: PLC0415

    parser = ArgumentParser(prog="clsvit demo", description=__doc__)
    parser.add_argument("--out", type=str, default="outputs/demo")
    parser.add_argument("--data_root", type=str, default="data/synthetic")
    parser.add_argument("--specializations", type=list[str], default=["vanilla", "paper"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain_epochs", type=int, default=3)
    parser.add_argument("--probe_steps", type=int, default=150)
    parser.add_argument("--num_train", type=int, default=512, help="synthetic training images per layout")
    parser.add_argument("--num_val", type=int, default=128, help="synthetic validation images per layout")
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--progress_bar", type=bool, default=True)
    cfg = parser.parse_args(argv)
    start = time.time()
    write_synthetic_data(cfg.data_root, cfg.num_train, cfg.num_val)
    settings = StudySettings(
        data_root=cfg.data_root,
        out=cfg.out,
        pretrain_epochs=cfg.pretrain_epochs,
        probe_steps=cfg.probe_steps,
        num_workers=cfg.num_workers,
        progress_bar=cfg.progress_bar,
    )
    results = [run_one(spec, cfg.seed, settings) for spec in cfg.specializations]
    report = write_report(
        results,
        Path(cfg.out),
        "clsvit demo: vanilla vs specialized tiny ViT on synthetic scenes",
        notes=(
            f"One seed ({cfg.seed}), {cfg.pretrain_epochs} pretraining epochs, {cfg.probe_steps} probe steps: "
            "a smoke-scale run of the whole pipeline, not evidence for or against the paper "
            "(see experiments/proxy/ for the multi-seed study)."
        ),
    )
    print("\n" + markdown_table(results))
    print(f"\nreport: {report}  ({time.time() - start:.0f} s)")
    return results
