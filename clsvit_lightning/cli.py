"""The ``clsvit`` command: Lightning CLI subcommands plus the project's own.

``clsvit fit|validate|test|predict --config ...`` is a stock ``LightningCLI`` (jsonargparse: every
option can be overridden on the command line, ``--print_config`` works). Project commands such
as ``clsvit summary`` or ``clsvit demo`` are dispatched before it, each with its own parser.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from clsvit_lightning.commands.analyze import analyze_main
from clsvit_lightning.commands.demo import demo_main
from clsvit_lightning.commands.export import export_main
from clsvit_lightning.commands.summary import summary_main
from clsvit_lightning.commands.sweep import sweep_main
from clsvit_lightning.commands.synth import synth_main
from clsvit_lightning.training.cpu_allocator import keep_freed_memory

PROJECT_COMMANDS: dict[str, Callable[[list[str]], object]] = {
    "summary": summary_main,
    "demo": demo_main,
    "synth": synth_main,
    "analyze": analyze_main,
    "export": export_main,
    "sweep": sweep_main,
}


def main(args: list[str] | None = None) -> None:
    """Console entry point (``clsvit``)."""
    try:
        keep_freed_memory()  # before any tensor exists; see training/cpu_allocator.py
    except ValueError as error:  # a bad CLSVIT_MALLOC_TUNING value
        raise SystemExit(f"clsvit: {error}") from None
    run(args)


def run(args: list[str] | None = None) -> object:
    """Run one ``clsvit`` command and return what it produced (the CLI object, a result table)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in PROJECT_COMMANDS:
        return PROJECT_COMMANDS[argv[0]](argv[1:])
    # From the console LightningCLI reads sys.argv itself (passing it as `args` makes it warn).
    return lightning_main(None if args is None else argv)


SUBCOMMANDS = ("fit", "validate", "test", "predict")


def lightning_main(argv: list[str] | None) -> object:
    from lightning.pytorch import LightningDataModule, LightningModule  # noqa: PLC0415 (keep `summary` light)
    from lightning.pytorch.cli import LightningCLI  # noqa: PLC0415

    from clsvit_lightning.ops.save_config import SaveConfigToLoggers  # noqa: PLC0415

    return LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        # Writes config.yaml (overwriting: a SLURM requeue or a W&B run reuses the folder) and stores
        # the config in each W&B run.
        save_config_callback=SaveConfigToLoggers,
        save_config_kwargs={"overwrite": True},
        # A mistyped option (`--trainer.max_step 1`) is an error, not a silent prefix match.
        parser_kwargs={"allow_abbrev": False, **{command: {"allow_abbrev": False} for command in SUBCOMMANDS}},
        args=argv,
    )


if __name__ == "__main__":
    main()
