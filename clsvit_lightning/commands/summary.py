"""``clsvit summary``: parameters, specialization overhead and FLOPs of backbone configurations."""

from __future__ import annotations

from jsonargparse import ArgumentParser

from clsvit_lightning.models import SIZES, Specialization, count_flops_per_image, count_parameters


def backbone_table(
    sizes: list[str], patch_sizes: list[int], specializations: list[str], img_size: int, num_registers: int
) -> list[dict[str, object]]:
    """One row per (size, patch, specialization): parameters, overhead, GFLOPs per image."""
    import torch  # noqa: PLC0415

    rows = []
    for size in sizes:
        for patch_size in patch_sizes:
            for spec in specializations:
                resolution = img_size - img_size % patch_size
                # Built on the meta device: counting a ViT-g costs no memory and no time.
                with torch.device("meta"):
                    model = SIZES[size](
                        patch_size=patch_size, specialization=spec, num_registers=num_registers, img_size=resolution
                    )
                count = count_parameters(model)
                rows.append(
                    {
                        "model": f"vit_{size}/{patch_size}",
                        "specialization": spec,
                        "spec": Specialization.parse(spec).to_string(depth=model.depth),
                        "img_size": resolution,
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
    parser.add_argument("--sizes", type=list[str], default=["small", "base", "large"])
    parser.add_argument("--patch_sizes", type=list[int], default=[16])
    parser.add_argument("--specializations", type=list[str], default=["vanilla", "paper"])
    parser.add_argument("--img_size", type=int, default=224)
    parser.add_argument("--num_registers", type=int, default=0)
    cfg = parser.parse_args(argv)
    unknown = sorted(set(cfg.sizes) - set(SIZES))
    if unknown:
        parser.error(f"--sizes: unknown size(s) {unknown}; choose from {sorted(SIZES)}")
    rows = backbone_table(cfg.sizes, cfg.patch_sizes, cfg.specializations, cfg.img_size, cfg.num_registers)
    print(format_table(rows))
    return rows
