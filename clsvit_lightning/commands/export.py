"""``clsvit export``: the teacher backbone of a pretraining checkpoint, alone, for ``load_pretrained``."""

from __future__ import annotations

import json

from jsonargparse import ArgumentParser


def export_main(argv: list[str]) -> dict:
    from clsvit_lightning.errors import ConfigError  # noqa: PLC0415
    from clsvit_lightning.tasks.dinov2_pretraining import export_teacher_backbone  # noqa: PLC0415 (fast --help)

    parser = ArgumentParser(prog="clsvit export", description=__doc__)
    parser.add_argument("--ckpt", type=str, required=True, help="a DINOv2Pretraining Lightning checkpoint (.ckpt)")
    parser.add_argument("--out", type=str, required=True, help="where to write the backbone (.pth)")
    cfg = parser.parse_args(argv)
    try:
        info = export_teacher_backbone(cfg.ckpt, cfg.out)
    except ConfigError as error:  # a missing, unreadable or foreign checkpoint: its path and why
        raise SystemExit(f"clsvit export: --ckpt {error}") from None
    print(json.dumps({"out": cfg.out, "keys": info["keys"], "params": info["params"], "config": info["config"]}))
    return info
