"""The recipe files shipped inside the package, found by name from any working directory.

``clsvit fit --config pretrain/dinov2 --config pretrain/tiny_synthetic`` reads
``clsvit_lightning/configs/pretrain/dinov2.yaml`` whether the package is a source checkout (where
``configs/`` at the repository root points to the same folder) or an installed wheel. A value that
is an existing file is used as it is, so a user's own YAML always wins over a shipped name.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_ROOT = Path(__file__).parent / "configs"
# Options that take config files: LightningCLI's `--config`, `clsvit sweep`'s `--base_config` /
# `--probe_config` (lists: every value up to the next option).
CONFIG_OPTIONS = ("--config", "--base_config", "--probe_config")


def config_names() -> list[str]:
    """Every shipped config as the name ``resolve_config`` accepts (``pretrain/dinov2``)."""
    return sorted(path.relative_to(CONFIG_ROOT).with_suffix("").as_posix() for path in CONFIG_ROOT.rglob("*.yaml"))


def shipped_config(name: str) -> Path | None:
    """The shipped file ``name`` stands for (``pretrain/dinov2``, ``configs/pretrain/dinov2.yaml``), or None."""
    relative = name.removeprefix("./").removeprefix("configs/")
    for candidate in (relative, f"{relative}.yaml"):
        path = CONFIG_ROOT / candidate
        if candidate and path.is_file():
            return path
    return None


def resolve_config(name: str) -> str:
    """An existing file as it is, else the shipped config it names; anything else is an error naming both."""
    if Path(name).is_file():
        return name
    path = shipped_config(name)
    if path is not None:
        return str(path)
    raise FileNotFoundError(
        f"config {name!r} is neither a file nor a shipped config; shipped configs (`clsvit config list`): "
        + ", ".join(config_names())
    )


def _is_inline_yaml(value: str) -> bool:
    return value.lstrip().startswith(("{", "[")) or "\n" in value or ": " in value


def resolve_config_args(argv: list[str]) -> list[str]:
    """``argv`` with every config-file value of :data:`CONFIG_OPTIONS` resolved by :func:`resolve_config`.

    ``--config`` takes one value; the sweep's ``--base_config``/``--probe_config`` every value up to
    the next option. Inline YAML (``--config '{trainer: {max_steps: 1}}'``) passes unchanged.
    """
    resolved: list[str] = []
    option, values_left = None, 0
    for arg in argv:
        name, equals, value = arg.partition("=")
        if arg.startswith("-"):
            if name in CONFIG_OPTIONS and equals:
                arg = f"{name}={_resolve_value(value)}"
                option, values_left = None, 0
            else:
                option = name if name in CONFIG_OPTIONS else None
                values_left = 1 if option == "--config" else -1  # -1: any number
        elif option is not None and values_left != 0:
            arg = _resolve_value(arg)
            values_left -= 1
        resolved.append(arg)
    return resolved


def _resolve_value(value: str) -> str:
    inline = value.lstrip().startswith(("{", "[")) or "\n" in value or ": " in value
    return value if inline else resolve_config(value)
