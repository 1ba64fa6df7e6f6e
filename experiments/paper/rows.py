"""The paper's table rows (experiments/paper/rows.yaml) as launch commands and markdown tables.

    .venv/bin/python experiments/paper/rows.py            # the tables and commands of README.md
    .venv/bin/python experiments/paper/rows.py --run dinov2_vits16_norms   # one run's commands

Commands use placeholders for site paths: $IMAGENET, $ADE20K, $VOC, $CITYSCAPES, $NYU (dataset roots)
and $CKPT (the run's pretraining checkpoint, e.g. outputs/paper/<run>/<overlay>-<jobid>/.../last.ckpt).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROWS = ROOT / "experiments/paper/rows.yaml"
TABLES = {
    "main": "DINOv2, three sizes, vanilla vs specialized (`paper`)",
    "components": "Which components to specialize (ViT-S/16, DINOv2; cumulative from the top)",
    "qkv_depth": "In how many early blocks to specialize qkv (norms + LayerScales everywhere; ViT-S/16, DINOv2)",
    "registers": "Registers: 0 vs 4, and which path they take (ViT-S/16, DINOv2)",
    "deit3": "Supervised DeiT III, vanilla vs specialized",
}
DATA_ROOTS = {
    "ade20k_linear": "$ADE20K",
    "ade20k_ms": "$ADE20K",
    "voc_linear": "$VOC",
    "cityscapes_linear": "$CITYSCAPES",
    "nyu_depth_linear": "$NYU",
    "knn": "$IMAGENET",
    "linear": "$IMAGENET",
}


def load() -> dict:
    return yaml.safe_load(ROWS.read_text())


def pretrain_configs(spec: dict, run: str) -> list[str]:
    """Every config of a pretraining run, in order (recipe first)."""
    entry = spec["runs"][run]
    return [spec["recipes"][entry["recipe"]]["base_config"], *entry["pretrain"]]


def evaluation_configs(spec: dict, run: str, evaluation: str) -> list[str]:
    """Every config of one evaluation of a run: the protocol, then the run's backbone overlays."""
    return [*spec["evaluations"][evaluation]["configs"], *spec["runs"][run]["backbone"]]


def pretrain_command(spec: dict, run: str) -> str:
    entry = spec["runs"][run]
    launcher = spec["recipes"][entry["recipe"]]["launcher"]
    first, *rest = entry["pretrain"]
    extra = "".join(f" --config {path}" for path in rest)
    return f"CLSVIT_ROOT=outputs/paper/{run} sbatch {launcher} {first}{extra} --data.init_args.root $IMAGENET"


def evaluation_command(spec: dict, run: str, evaluation: str) -> str:
    protocol = spec["evaluations"][evaluation]
    first, *rest = evaluation_configs(spec, run, evaluation)
    extra = "".join(f" --config {path}" for path in rest)
    root = f"--data.init_args.root {DATA_ROOTS[evaluation]}"
    if protocol["command"] == "fit" and first.startswith("configs/dense/"):
        # Dense probes: the SLURM script adds DDP, requeue and W&B; it takes the protocol config first.
        return f"CLSVIT_ROOT=outputs/paper/{run} sbatch experiments/slurm/dense_eval.sbatch {first} $CKPT{extra} {root}"
    return (
        f"srun --gpus=1 clsvit {protocol['command']} --config {first}{extra} --model.init_args.pretrained $CKPT {root}"
    )


def rows_markdown(spec: dict, compute: dict | None = None) -> str:
    """One table per paper table: row, what it tests, run, overhead/compute if given, the paper's figure."""
    parts = []
    for table, title in TABLES.items():
        lines = [
            f"### {title}",
            "",
            "| row | tests | run | evaluations | pretrain A100-h | paper reports |",
            "|---|---|---|---|---|---|",
        ]
        for index, row in enumerate((r for r in spec["rows"] if r["table"] == table), 1):
            hours = "" if compute is None else f"{compute['runs'][row['run']]['pretrain_gpu_hours']:,.0f}"
            cells = [f"{table}.{index}", row["tests"], f"`{row['run']}`", row["evaluations"], hours, row["paper"]]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def runs_markdown(spec: dict) -> str:
    lines = ["| run | pretraining command | backbone overlays for every evaluation |", "|---|---|---|"]
    for run, entry in spec["runs"].items():
        overlays = " ".join(f"`{path}`" for path in entry["backbone"])
        lines.append(f"| `{run}` | `{pretrain_command(spec, run)}` | {overlays} |")
    return "\n".join(lines)


def evaluations_markdown(spec: dict, run: str) -> str:
    lines = ["| evaluation | metric | command |", "|---|---|---|"]
    for evaluation, protocol in spec["evaluations"].items():
        lines.append(f"| {evaluation} | `{protocol['metric']}` | `{evaluation_command(spec, run, evaluation)}` |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="print the commands of this run only")
    args = parser.parse_args(argv)
    spec = load()
    if args.run:
        if args.run not in spec["runs"]:
            parser.error(f"--run {args.run!r}: unknown run; known runs: {sorted(spec['runs'])}")
        print(pretrain_command(spec, args.run))
        for evaluation in spec["evaluations"]:
            print(evaluation_command(spec, args.run, evaluation))
        return
    print(rows_markdown(spec) + "\n\n" + runs_markdown(spec))


if __name__ == "__main__":
    main()
