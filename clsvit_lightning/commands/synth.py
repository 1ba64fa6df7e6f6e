"""``clsvit synth``: write the procedural synthetic scenes in the ImageNet and/or ADE20K layouts.

clsvit synth --out data/synthetic --kind all [--num_train 2000 --num_val 200 --num_classes 10 --seed 0]
"""

from __future__ import annotations

import json
from typing import Literal

from jsonargparse import ArgumentParser


def synth_main(argv: list[str]) -> dict[str, object]:
    parser = ArgumentParser(prog="clsvit synth", description=__doc__)
    parser.add_argument("--out", type=str, required=True, help="output folder (imagenet/ and ade20k/ go inside)")
    parser.add_argument("--kind", type=Literal["imagenet", "ade20k", "all"], default="all")
    parser.add_argument("--num_train", type=int, default=2000)
    parser.add_argument("--num_val", type=int, default=200)
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--size_range", type=tuple[int, int], default=(64, 96), help="min and max side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    cfg = parser.parse_args(argv)
    if cfg.size_range[0] < 16 or cfg.size_range[0] > cfg.size_range[1]:
        parser.error(f"--size_range {list(cfg.size_range)}: expected 16 <= min <= max")
    from clsvit_lightning.data.synthetic.writers import KINDS, write_synthetic  # noqa: PLC0415

    kinds = KINDS if cfg.kind == "all" else (cfg.kind,)
    summary = write_synthetic(
        cfg.out, kinds, cfg.num_train, cfg.num_val, cfg.num_classes, tuple(cfg.size_range), cfg.seed
    )
    print(json.dumps({key: summary[key] for key in ("out", "kinds", "num_train", "num_val", "num_classes", "seconds")}))
    return summary
