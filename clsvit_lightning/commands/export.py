"""``clsvit export``: the backbone of a checkpoint, alone, for this project or for timm / transformers.

``--ckpt`` takes any task's Lightning checkpoint (a pretraining checkpoint: its teacher, or
``--which student``), a run folder (its newest checkpoint), or any file ``from_pretrained`` reads.
``--format``: ``clsvit`` (default; a torch file with the architecture), ``safetensors`` (the same
in a ``.safetensors`` file), ``dinov2`` (a bare state dict in DINOv2's layout), ``timm`` (timm's
layout; ``.safetensors`` if ``--out`` ends so), ``hf`` (a transformers model folder). The last three
are refused for a specialized backbone: those libraries have no such architecture.
"""

from __future__ import annotations

import json
from typing import Literal

from jsonargparse import ArgumentParser


def export_main(argv: list[str]) -> dict:
    from clsvit_lightning.errors import ConfigError  # noqa: PLC0415 (fast --help)
    from clsvit_lightning.models import EXPORT_FORMATS, export_backbone, from_pretrained  # noqa: PLC0415

    parser = ArgumentParser(prog="clsvit export", description=__doc__)
    parser.add_argument("--ckpt", type=str, required=True, help="a checkpoint, run folder or backbone file")
    parser.add_argument("--out", type=str, required=True, help="the file to write (a folder for --format hf)")
    parser.add_argument("--format", type=Literal[EXPORT_FORMATS], default="clsvit", help="what to write")
    parser.add_argument(
        "--which", type=Literal["teacher", "student"] | None, default=None,
        help="the network of a pretraining checkpoint (default: the teacher)",
    )  # fmt: skip
    cfg = parser.parse_args(argv)
    try:
        model = from_pretrained(cfg.ckpt, which=cfg.which)
    except (ConfigError, FileNotFoundError) as error:  # a missing, unreadable or foreign checkpoint: its path and why
        raise SystemExit(f"clsvit export: --ckpt {_one_line(error)}") from None
    try:
        info = export_backbone(model, cfg.out, cfg.format)
    except ConfigError as error:  # a specialized backbone for a library without its architecture
        raise SystemExit(f"clsvit export: --format {cfg.format}: {cfg.ckpt}: {_one_line(error)}") from None
    print(json.dumps(info))
    return info


def _one_line(error: BaseException) -> str:
    """The error's message; a multi-line one (a key mismatch listing) joined with ``; ``."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
