"""``clsvit summary``: parameters, specialization overhead and FLOPs of backbone configurations.

``--sizes`` takes DINOv2-family sizes (``small``, ..., built with ``--patch_sizes`` and
``--num_registers``) and DINOv3's released backbones by their hub names (``dinov3_vits16``, ...,
``dinov3_vit7b16``; ``dinov3`` for all seven), which fix their own patch size and 4 storage tokens.
"""

from __future__ import annotations

from jsonargparse import ArgumentParser

from clsvit_lightning.models import DINOV3_SIZES, SIZES, Specialization, count_flops_per_image, count_parameters


def expand_sizes(sizes: list[str]) -> list[str]:
    """``"dinov3"`` stands for every DINOv3 size, in release order."""
    return [name for size in sizes for name in (DINOV3_SIZES if size == "dinov3" else [size])]


def build_backbone(size: str, patch_size: int, spec: str, img_size: int, num_registers: int):
    """A DINOv2-family size with these options, or a DINOv3 backbone (its own patch size and storage tokens)."""
    if size in DINOV3_SIZES:
        return DINOV3_SIZES[size](specialization=spec, img_size=img_size - img_size % 16)
    resolution = img_size - img_size % patch_size
    return SIZES[size](patch_size=patch_size, specialization=spec, num_registers=num_registers, img_size=resolution)


def backbone_table(
    sizes: list[str], patch_sizes: list[int], specializations: list[str], img_size: int, num_registers: int
) -> list[dict[str, object]]:
    """One row per (size, patch, specialization): parameters, overhead, GFLOPs per image."""
    import torch  # noqa: PLC0415

    rows = []
    for size in expand_sizes(sizes):
        for patch_size in [16] if size in DINOV3_SIZES else patch_sizes:
            for spec in specializations:
                # Built on the meta device: counting a ViT-g or DINOv3's 7B costs no memory and no time.
                with torch.device("meta"):
                    model = build_backbone(size, patch_size, spec, img_size, num_registers)
                count = count_parameters(model)
                rows.append(
                    {
                        "model": size if size in DINOV3_SIZES else f"vit_{size}/{patch_size}",
                        "specialization": spec,
                        "spec": Specialization.parse(spec).to_string(depth=model.depth),
                        "img_size": model.config["img_size"],
                        "params_M": count.total / 1e6,
                        "unspecialized_M": count.unspecialized / 1e6,
                        "overhead_pct": 100 * count.overhead,
                        "gflops": count_flops_per_image(model) / 1e9,
                    }
                )
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    header = "| model | specialization | img | params (M) | overhead | GFLOPs/img | blocks split |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['specialization']} | {r['img_size']} | {r['params_M']:.2f} | "
            f"+{r['overhead_pct']:.2f} % | {r['gflops']:.2f} | `{r['spec']}` |"
        )
    return "\n".join(lines)


def summary_main(argv: list[str]) -> list[dict[str, object]]:
    parser = ArgumentParser(prog="clsvit summary", description=__doc__)
    parser.add_argument(
        "--sizes",
        type=list[str],
        default=["small", "base", "large"],
        help=f"sizes: {sorted(SIZES)}, DINOv3's {list(DINOV3_SIZES)}, or dinov3 (all of them)",
    )
    parser.add_argument("--patch_sizes", type=list[int], default=[16])
    parser.add_argument("--specializations", type=list[str], default=["vanilla", "paper"])
    parser.add_argument("--img_size", type=int, default=224)
    parser.add_argument("--num_registers", type=int, default=0)
    cfg = parser.parse_args(argv)
    unknown = sorted(set(cfg.sizes) - set(SIZES) - set(DINOV3_SIZES) - {"dinov3"})
    if unknown:
        parser.error(f"--sizes: unknown size(s) {unknown}; choose from {sorted(SIZES)}, {list(DINOV3_SIZES)} or dinov3")
    rows = backbone_table(cfg.sizes, cfg.patch_sizes, cfg.specializations, cfg.img_size, cfg.num_registers)
    print(format_table(rows))
    return rows
