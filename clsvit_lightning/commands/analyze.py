"""``clsvit analyze``: the paper's token-interaction analysis of a checkpoint on a folder of images.

Example::

    clsvit analyze --ckpt dinov2_vits14.pth --size small --patch_size 14 \\
        --data my_photos/ --out analysis/vits14 --img_size 448
    clsvit analyze --ckpt dinov3_vits16_pretrain_lvd1689m.pth --size dinov3_vits16 \\
        --data my_photos/ --out analysis/dinov3_vits16 --img_size 448

Writes ``<out>/analysis.json`` (keys documented in ``clsvit_lightning/analysis/report.py``), the
PNG figures and, with ``--advise`` (default), ``<out>/advice.json``: the advisor's ranked proposal
of components to specialize, also printed as a spec string for configs and sweeps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ArgumentParser

from clsvit_lightning.models import DINOV3_SIZES, SIZES


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="clsvit analyze",
        description="Token-interaction analysis of a checkpoint on a folder of images: writes analysis.json, "
        "PNG figures and advice.json (a ranked proposal of components to specialize).",
    )
    parser.add_argument("--config", action="config", help="YAML file with any of the options below")
    parser.add_argument(
        "--ckpt", type=str, required=True, help="checkpoint file (DINOv2, DINOv3, timm, transformers or this project)"
    )
    parser.add_argument("--data", type=str, required=True, help="folder of .jpg/.png images (searched recursively)")
    parser.add_argument("--out", type=str, required=True, help="output folder for analysis.json and the PNGs")
    group = "model architecture (must match the checkpoint)"
    parser.add_argument(
        "--size", type=str, default="small", help=f"{group}: one of {sorted(SIZES)} or DINOv3's {list(DINOV3_SIZES)}"
    )
    parser.add_argument("--patch_size", type=int, default=16, help=group)
    parser.add_argument(
        "--num_registers", type=int | None, default=None, help=f"{group} (default: 0, DINOv3's sizes: their 4)"
    )
    parser.add_argument("--specialization", type=str, default="vanilla", help=f"{group}: preset or spec string")
    parser.add_argument(
        "--model_kwargs", type=dict[str, Any], default={}, help="overrides of the size preset, e.g. {depth: 6}"
    )
    parser.add_argument("--img_size", type=int, default=224, help="images are resized and centre-cropped to this")
    parser.add_argument("--max_images", type=int, default=8, help="analyse the first N images (sorted by path)")
    parser.add_argument("--attention_blocks", type=list[int], default=[-1], help="blocks whose attention is drawn")
    parser.add_argument("--top_channels", type=int, default=8)
    parser.add_argument("--outlier_ratio", type=float, default=3.0)
    parser.add_argument("--device", type=str, default="auto", help="'auto' (cuda when available), 'cpu', 'cuda:0'")
    parser.add_argument("--advise", type=bool, default=True, help="also rank components to specialize")
    parser.add_argument("--max_overhead", type=float, default=0.085, help="advisor: parameter budget (fraction)")
    parser.add_argument("--keep_fraction", type=float, default=0.25, help="advisor: relative score threshold")
    parser.add_argument("--wandb_project", type=str | None, default=None, help="log the figures to this W&B project")
    parser.add_argument("--wandb_mode", type=Literal["offline", "online"], default="offline")
    return parser


def build_model(
    size: str, patch_size: int, num_registers: int | None, specialization: str, model_kwargs: dict, img_size: int
):
    """The size preset with ``model_kwargs`` overriding its fields (built on meta first: no init cost).

    A DINOv3 size keeps its 4 storage tokens unless ``num_registers`` is given.
    """
    import torch  # noqa: PLC0415 (keep `clsvit --help` fast)

    from clsvit_lightning.models import VisionTransformer  # noqa: PLC0415

    if size not in SIZES and size not in DINOV3_SIZES:
        raise ValueError(f"--size: unknown size {size!r}; choose from {sorted(SIZES)} or {list(DINOV3_SIZES)}")
    side = max(img_size - img_size % patch_size, patch_size)
    registers = {} if num_registers is None else {"num_registers": num_registers}
    with torch.device("meta"):
        if size in DINOV3_SIZES:
            preset = DINOV3_SIZES[size](patch_size=patch_size, img_size=side, **registers)
        else:
            preset = SIZES[size](patch_size=patch_size, img_size=side, num_registers=num_registers or 0)
    config = {**preset.config, "specialization": specialization, **model_kwargs}
    unknown = sorted(set(model_kwargs) - set(preset.config))
    if unknown:
        raise ValueError(f"--model_kwargs: unknown field(s) {unknown}; valid fields are {sorted(preset.config)}")
    return VisionTransformer(**config)


def analyze_main(argv: list[str]) -> dict[str, object]:
    """Run the command; returns the written files, the report and the advice (for scripts and tests)."""
    parser = build_parser()
    cfg = parser.parse_args(argv)
    import torch  # noqa: PLC0415

    from clsvit_lightning.analysis import advise, analyze_and_save, load_images  # noqa: PLC0415
    from clsvit_lightning.models import CheckpointMismatchError, load_pretrained  # noqa: PLC0415

    try:
        model = build_model(
            cfg.size, cfg.patch_size, cfg.num_registers, cfg.specialization, cfg.model_kwargs, cfg.img_size
        )
        load_pretrained(model, cfg.ckpt)
        images, paths = load_images(cfg.data, cfg.img_size, cfg.patch_size, cfg.max_images)
    except (FileNotFoundError, CheckpointMismatchError, ValueError) as error:
        parser.error(str(error))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    loggers = []
    if cfg.wandb_project:
        from lightning.pytorch.loggers import WandbLogger  # noqa: PLC0415

        loggers.append(WandbLogger(project=cfg.wandb_project, save_dir=cfg.out, offline=cfg.wandb_mode == "offline"))
    try:
        analysis, files = analyze_and_save(
            model.to(device), images, cfg.out, cfg.attention_blocks, cfg.top_channels, cfg.outlier_ratio, loggers
        )
    except ValueError as error:  # e.g. an --attention_blocks index beyond the depth
        parser.error(str(error))
    print(f"analysed {len(paths)} images from {cfg.data} with {model.spec.to_string(model.depth)!r}")
    print(f"wrote {files['report']} and {len(files) - 1} figures to {cfg.out}")
    result: dict[str, object] = {"files": files, "report": analysis.report, "advice": None}
    if cfg.advise:
        if not model.spec.is_vanilla():
            print("note: the advisor is meant for vanilla checkpoints; this one is already specialized")
        advice = advise(analysis.report, max_overhead=cfg.max_overhead, keep_fraction=cfg.keep_fraction)
        files["advice"] = Path(cfg.out) / "advice.json"
        files["advice"].write_text(json.dumps(advice.to_dict(), indent=1))
        print(advice.format())
        result["advice"] = advice
    for logger in loggers:
        logger.finalize("success")
    return result
