"""The ``LightningCLI`` behind ``clsvit fit|validate|test|predict``, and what it changes on resume.

Lightning's own CLI, given ``--ckpt_path``, parses the checkpoint's hyper-parameters *over* the
command line and config files, so ``--model.init_args.base_lr 0.002 --ckpt_path last.ckpt`` resumed
at the old lr (the advice of the non-finite-loss error could not work). Here the values given at
resume time win: the run logs every setting that differs from the checkpoint's, and refuses a
change to what the checkpoint's weights fix (the backbone architecture and specialization, the head
sizes: a task lists them in ``fixed_on_resume``) with one message naming each.

:func:`run` is one such command in this process, as ``clsvit`` runs it: the console entry point
(``cli.py``) and the study engine's in-process stages (``study/engine.py``) both call it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from clsvit_lightning.callbacks.save_config import SaveConfigToLoggers
from clsvit_lightning.config_files import resolve_config_args
from clsvit_lightning.data.io import CorruptImageError, DatasetLayoutError, LabelError
from clsvit_lightning.errors import ConfigError, find_config_error
from clsvit_lightning.models.checkpoint_files import read_checkpoint
from clsvit_lightning.models.specialization import Specialization

SUBCOMMANDS = ("fit", "validate", "test", "predict")
# Backbone constructor arguments a checkpoint's weights fix (shapes, which parameters exist).
FIXED_BACKBONE_ARGS = (
    "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "num_registers", "specialization",
    "in_chans", "position_encoding", "ffn_layer", "mask_k_bias", "norm_eps",
)  # fmt: skip


class ResumeConfigError(MisconfigurationException):
    """A value given at resume time contradicts what the checkpoint's weights fix."""


def _plain(value: Any) -> Any:
    """Config values as comparable plain data (Namespaces to dicts, tuples to lists)."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def resume_differences(
    requested: dict[str, Any], stored: dict[str, Any], stored_backbone: dict[str, Any] | None, fixed: frozenset[str]
) -> tuple[dict[str, tuple[Any, Any]], list[str]]:
    """``(changed, refused)``: settings whose requested value differs from the checkpoint's.

    ``changed`` maps ``model.init_args.<name>`` to ``(stored, requested)`` for values that may change;
    ``refused`` describes the changes to fixed values (task hyper-parameters in ``fixed``, and the
    backbone's architecture against the checkpoint's ``backbone_config``).
    """
    changed, refused = {}, []
    for name, old in stored.items():
        if name.startswith("_") or name not in requested:
            continue
        new = requested[name]
        if _plain(new) == _plain(old):
            continue
        key = f"model.init_args.{name}"
        if name in fixed:
            refused.append(f"{key}: {old!r} in the checkpoint, {new!r} requested")
        else:
            changed[key] = (old, new)
    backbone = requested.get("backbone")
    backbone_args = _plain(backbone).get("init_args", {}) if isinstance(backbone, (dict, Namespace)) else {}
    for name in FIXED_BACKBONE_ARGS:
        if stored_backbone is None or name not in stored_backbone or name not in backbone_args:
            continue
        old, new = stored_backbone[name], backbone_args[name]
        if name == "specialization":  # a preset and its resolved spec string are the same model
            depth = stored_backbone.get("depth")
            old_spec, new_spec = (Specialization.parse(_plain(v)).to_string(depth=depth) for v in (old, new))
            if old_spec == new_spec:
                continue
        if _plain(new) != _plain(old):
            refused.append(f"model.init_args.backbone.init_args.{name}: {old!r} in the checkpoint, {new!r} requested")
    return changed, refused


class ClsvitLightningCLI(LightningCLI):
    """``LightningCLI`` whose ``--ckpt_path`` resume honours the values given now (module docstring)."""

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():  # "last", "hpc", ...: the Trainer resolves them
            return
        try:
            checkpoint = read_checkpoint(ckpt_path)  # says which file, and why (never torch's unsafe advice)
        except ConfigError as error:
            raise SystemExit(f"clsvit {subcommand}: --ckpt_path {error}") from None
        if "state_dict" not in checkpoint:
            raise SystemExit(
                f"clsvit {subcommand}: --ckpt_path {ckpt_path} is not a Lightning checkpoint (no 'state_dict'); "
                "weights to start from go to --model.init_args.pretrained"
            )
        stored = dict(checkpoint.get("hyper_parameters") or {})
        model = self.config[subcommand].get("model")
        if not stored or model is None:
            return
        requested = _plain(model.get("init_args") or {})
        model_class = self._model_class_of(model)
        fixed = frozenset(getattr(model_class, "fixed_on_resume", ()))
        changed, refused = resume_differences(requested, stored, checkpoint.get("backbone_config"), fixed)
        if refused:
            raise SystemExit(
                f"clsvit {subcommand}: cannot resume {ckpt_path} with another architecture or head:\n  "
                + "\n  ".join(refused)
                + "\nStart a new run instead (or pass the weights as --model.init_args.pretrained)."
            )  # fmt: skip
        for key, (old, new) in changed.items():
            rank_zero_info(f"resume: {key} = {new!r} (the checkpoint had {old!r}); the value given now is used")

    @staticmethod
    def _model_class_of(model: Any) -> type | None:
        class_path = model.get("class_path") if isinstance(model, (dict, Namespace)) else None
        if not class_path:
            return None
        module_name, _, class_name = class_path.rpartition(".")
        try:
            module = __import__(module_name, fromlist=[class_name])
        except ImportError:
            return None
        return getattr(module, class_name, None)


def lightning_main(argv: list[str] | None) -> ClsvitLightningCLI:
    """Run ``clsvit fit|validate|test|predict`` on ``argv`` (``None``: ``sys.argv``)."""
    return ClsvitLightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        # Writes config.yaml (overwriting: a SLURM requeue or a W&B run reuses the folder) and stores
        # the config in each W&B run.
        save_config_callback=SaveConfigToLoggers,
        save_config_kwargs={"overwrite": True},
        # The tasks build their own optimizers and schedules (parameter groups, per-step arrays):
        # LightningCLI's --optimizer/--lr_scheduler would be silently ignored or break them.
        auto_configure_optimizers=False,
        # A mistyped option (`--trainer.max_step 1`) is an error, not a silent prefix match.
        parser_kwargs={"allow_abbrev": False, **{command: {"allow_abbrev": False} for command in SUBCOMMANDS}},
        args=argv,
    )


def run(argv: list[str] | None = None) -> ClsvitLightningCLI:
    """``clsvit fit|validate|test|predict ...`` in this process; ``None``: the command line (``sys.argv``).

    Shipped config names resolve (``--config pretrain/dinov2``). A bad value or file ends in one line
    (``SystemExit("clsvit fit: ...")``), not inside jsonargparse's wrapper with its traceback and
    config dump; dataset errors name the file and the expected layout, so a traceback adds nothing.
    """
    console = argv is None
    argv = list(sys.argv[1:] if console else argv)
    command = argv[0] if argv else ""
    try:
        argv = resolve_config_args(argv)
    except FileNotFoundError as error:
        raise SystemExit(f"clsvit {command}: {error}") from None
    try:
        if console:  # LightningCLI then reads sys.argv itself (`args` as well would warn)
            sys.argv[1:] = argv
            return lightning_main(None)
        return lightning_main(argv)
    except Exception as error:
        config_error = find_config_error(error, (ConfigError, DatasetLayoutError, LabelError, CorruptImageError))
        if config_error is None:
            raise
        raise SystemExit(f"clsvit {command}: {config_error}") from None
