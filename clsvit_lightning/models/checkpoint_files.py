"""Checkpoint files: reading one safely, finding a run's newest, and the errors that name the file.

Every reader of the project (``load_pretrained``, ``from_pretrained``, the LightningCLI's resume
checks, the stage engine) goes through :func:`read_checkpoint`, so a missing, empty, truncated or
unsafe file gives the same one-line message everywhere.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from clsvit_lightning.errors import ConfigError


class CheckpointMismatchError(ConfigError):
    """The checkpoint does not fit the model; the message lists the offending keys."""


class CheckpointReadError(CheckpointMismatchError):
    """The file is empty, truncated, not a torch checkpoint, or not the kind of checkpoint expected."""


class CheckpointNotFoundError(FileNotFoundError, ConfigError):
    """The checkpoint path does not exist (a ``FileNotFoundError`` to its callers)."""


def read_checkpoint(path: str | os.PathLike) -> Mapping[str, object]:
    """``torch.load`` with ``weights_only=True``; every checkpoint reader of the project goes through it.

    Errors name the file and what was expected: ``X does not exist``, ``X is an empty file``, ``X is
    truncated or not a torch checkpoint (UnpicklingError)``. torch's own text is not shown: for a
    garbage file it advises ``weights_only=False``, which would run arbitrary code from the file.

    A folder (a training run's root) stands for its newest ``last*.ckpt``, else its newest ``.ckpt``,
    searched recursively: the W&B logger files checkpoints under ``<save_dir>/<project>/<run id>/``.
    """
    path = Path(path)
    if path.is_dir():
        path = newest_checkpoint(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"{path} does not exist")
    if not path.is_file():
        raise CheckpointReadError(f"{path} is not a file; expected a torch checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointReadError(f"{path} is an empty file; expected a torch checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (torch raises several types for corrupt or unsafe files)
        unsafe = re.search(r"GLOBAL (\S+)", str(error))
        if unsafe:  # a real pickle, but of objects other than tensors and containers
            why = f"holds a pickled {unsafe.group(1)}, which a weights-only load refuses to run"
        else:
            why = f"is truncated or not a torch checkpoint ({type(error).__name__})"
        raise CheckpointReadError(f"{path} {why}") from None
    if not isinstance(checkpoint, Mapping):
        raise CheckpointReadError(f"{path} holds a {type(checkpoint).__name__}; expected a checkpoint dict")
    return checkpoint


def newest_checkpoint(folder: Path) -> Path:
    """The newest ``last*.ckpt`` under ``folder`` (by modification time), else its newest ``.ckpt``."""
    for pattern in ("last*.ckpt", "*.ckpt"):
        found = sorted(folder.rglob(pattern), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    raise CheckpointNotFoundError(f"no .ckpt file under the folder {folder}")
