"""The ``clsvit`` command: Lightning CLI subcommands plus the project's own.

``clsvit fit|validate|test|predict --config ...`` is a stock ``LightningCLI`` (jsonargparse: every
option can be overridden on the command line, ``--print_config`` works); ``--config`` takes a file
or the name of a shipped config (``pretrain/dinov2``, see ``config_files.py``). Project commands
such as ``clsvit summary`` or ``clsvit demo`` are dispatched before it, each with its own parser.
``clsvit --help`` lists both kinds: LightningCLI's own top-level help knows only its subcommands.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from clsvit_lightning import __version__
from clsvit_lightning.commands.analyze import analyze_main
from clsvit_lightning.commands.config import config_main
from clsvit_lightning.commands.demo import demo_main
from clsvit_lightning.commands.export import export_main
from clsvit_lightning.commands.summary import summary_main
from clsvit_lightning.commands.sweep import sweep_main
from clsvit_lightning.commands.sweep_run import sweep_run_main
from clsvit_lightning.commands.synth import synth_main
from clsvit_lightning.config_files import resolve_config_args
from clsvit_lightning.cpu_allocator import keep_freed_memory

PROJECT_COMMANDS: dict[str, Callable[[list[str]], object]] = {
    "summary": summary_main,
    "demo": demo_main,
    "synth": synth_main,
    "analyze": analyze_main,
    "export": export_main,
    "sweep": sweep_main,
    "sweep-run": sweep_run_main,
    "config": config_main,
}

# One line each for `clsvit --help` (Trainer's docstrings are paragraphs).
LIGHTNING_COMMANDS = {
    "fit": "train a model: pretraining (DINOv2, DeiT III), probes, finetuning",
    "validate": "evaluate a model or checkpoint on the validation split (k-NN, mIoU, depth)",
    "test": "evaluate on the test split",
    "predict": "extract features of any backbone for a folder or dataset (configs/predict/features.yaml)",
}
SUBCOMMANDS = tuple(LIGHTNING_COMMANDS)


def main(args: list[str] | None = None) -> None:
    """Console entry point (``clsvit``)."""
    try:
        keep_freed_memory()  # before any tensor exists; see clsvit_lightning/cpu_allocator.py
    except ValueError as error:  # a bad CLSVIT_MALLOC_TUNING value
        raise SystemExit(f"clsvit: {error}") from None
    try:
        run(args)
    except BrokenPipeError:  # `clsvit config list | head`: the reader left, nothing to report
        sys.stderr.close()


def run(args: list[str] | None = None) -> object:
    """Run one ``clsvit`` command and return what it produced (the CLI object, a result table)."""
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return None
    if argv[0] == "--version":
        print(version())
        return None
    try:
        argv = resolve_config_args(argv)
    except FileNotFoundError as error:
        raise SystemExit(f"clsvit {argv[0]}: {error}") from None
    if argv[0] in PROJECT_COMMANDS:
        return PROJECT_COMMANDS[argv[0]](argv[1:])
    if argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        raise SystemExit(f"clsvit: unknown command {argv[0]!r}\n\n{usage()}")
    from clsvit_lightning.lightning_cli import run as run_lightning  # noqa: PLC0415 (keep `summary` light)

    return run_lightning(None if args is None else argv)  # None: from the console, LightningCLI reads sys.argv


def version() -> str:
    import lightning  # noqa: PLC0415
    import torch  # noqa: PLC0415

    return f"clsvit_lightning {__version__} (torch {torch.__version__}, lightning {lightning.__version__})"


def usage() -> str:
    """The top-level help: every command with one line."""

    def first_line(function: Callable) -> str:
        doc = (sys.modules[function.__module__].__doc__ or "").strip().splitlines()[0]
        return doc.split(":", 1)[-1].strip() if doc.startswith("``clsvit") else doc

    width = max(map(len, [*LIGHTNING_COMMANDS, *PROJECT_COMMANDS])) + 2
    lines = [
        "usage: clsvit [-h] [--version] COMMAND [options]",
        "",
        "Pretrain and evaluate Vision Transformers with [CLS]/patch layer specialization.",
        "`clsvit COMMAND --help` gives a command's options; `--config` takes a YAML file or a shipped",
        "config name (`clsvit config list`).",
        "",
        "Lightning commands (LightningCLI: every option overridable, --print_config):",
        *(f"  {name:<{width}}{text}" for name, text in LIGHTNING_COMMANDS.items()),
        "",
        "Project commands:",
        *(f"  {name:<{width}}{first_line(function)}" for name, function in PROJECT_COMMANDS.items()),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
