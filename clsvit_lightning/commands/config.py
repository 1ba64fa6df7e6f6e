"""``clsvit config``: list the shipped recipe configs, print one's path or contents.

clsvit config list                  # every name `--config` accepts
clsvit config path pretrain/dinov2  # the file, e.g. to copy and edit
clsvit config show pretrain/dinov2  # its YAML
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentParser

from clsvit_lightning.config_files import config_names, resolve_config


def config_main(argv: list[str]) -> str:
    parser = ArgumentParser(prog="clsvit config", description=__doc__)
    parser.add_argument("action", type=Literal["list", "path", "show"])
    parser.add_argument("name", type=str | None, default=None, nargs="?", help="a shipped config, e.g. pretrain/dinov2")
    cfg = parser.parse_args(argv)
    if cfg.action == "list":
        text = "\n".join(config_names())
    elif cfg.name is None:
        parser.error(f"`clsvit config {cfg.action}` needs a config name (see `clsvit config list`)")
    else:
        try:
            path = resolve_config(cfg.name)
        except FileNotFoundError as error:
            parser.error(str(error))
        text = path if cfg.action == "path" else Path(path).read_text()
    print(text)
    return text
