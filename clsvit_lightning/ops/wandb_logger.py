"""A ``WandbLogger`` that decides online/offline itself and names runs after the model.

Without credentials, ``wandb.init`` raises ``UsageError`` (non-TTY) instead of falling back to
offline, and with a key but no network it fails after ~100 s (docs/operations.md#wb-logging). So with
``mode="auto"`` the logger looks for credentials first (``WANDB_API_KEY``, an OIDC token file, a
netrc entry for the API host) and runs offline when there are none; ``wandb sync <dir>`` uploads
later. An explicit ``WANDB_MODE`` in the environment always wins.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from clsvit_lightning.ops.run_info import describe_backbone, find_backbone

Mode = Literal["auto", "online", "offline", "disabled"]
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}


def has_wandb_credentials(environ: dict[str, str] | None = None) -> bool:
    """True when W&B could authenticate: an API key, an identity token file, or a netrc entry."""
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = Path(env["NETRC"]) if env.get("NETRC") else Path(env.get("HOME", str(Path.home()))) / ".netrc"
    if not path.is_file():
        return False
    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError) as error:
        rank_zero_warn(f"W&B: cannot read {path} ({error}); treating it as no credentials")
        return False


def resolve_wandb_mode(requested: str = "auto", environ: dict[str, str] | None = None) -> str:
    """``online``, ``offline`` or ``disabled``: explicit request > ``WANDB_MODE`` > credentials found."""
    env = os.environ if environ is None else environ
    requested = _MODE_ALIASES.get(requested, requested)
    if requested not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"W&B logger: mode must be auto, online, offline or disabled, got {requested!r}")
    if requested != "auto":
        return requested
    from_env = env.get("WANDB_MODE", "").strip().lower()
    if from_env:
        return _MODE_ALIASES.get(from_env, from_env)
    return "online" if has_wandb_credentials(env) else "offline"


def wandb_mode_reason(requested: str = "auto", environ: dict[str, str] | None = None) -> str:
    """Why :func:`resolve_wandb_mode` chose its mode, for the log line."""
    env = os.environ if environ is None else environ
    if _MODE_ALIASES.get(requested, requested) != "auto":
        return "requested"
    if env.get("WANDB_MODE", "").strip():
        return f"WANDB_MODE={env['WANDB_MODE'].strip()}"
    return "credentials found" if has_wandb_credentials(env) else "no credentials found"


def slurm_job_key(environ: dict[str, str] | None = None) -> str | None:
    """``<job>`` or ``<array job>_<task>``: what ``scontrol requeue`` keeps across restarts."""
    env = os.environ if environ is None else environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


class ClsvitWandbLogger(WandbLogger):
    """``WandbLogger`` with ``mode="auto"``, model-derived names/tags and summary metrics.

    Args:
        name: run name; None names it after the model (``vit_small_p16-paper-reg4``).
        save_dir: folder of the ``wandb/`` run directories (keep it inside the run's root dir).
        project: W&B project (else ``$WANDB_PROJECT``, else ``clsvit``).
        mode: ``auto`` (offline when no credentials), ``online``, ``offline`` or ``disabled``.
        tags: extra tags; the model size, specialization and registers are always added.
        group: run group; under SLURM it defaults to ``slurm-<job id>`` so requeued segments stay together.
        version: run id. Under SLURM and online it defaults to ``slurm-<job id>``: a requeued job
            continues the same run (``resume="allow"``). Offline runs cannot be resumed (each restart
            writes a new ``offline-run-*`` folder), so they keep a fresh id and share the group instead.
        log_model: upload checkpoints as artifacts (turned off, with a warning, when offline).
        kwargs: the rest of ``WandbLogger`` / ``wandb.init`` (``entity``, ``notes``, ``job_type``...).
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str = ".",
        project: str | None = None,
        mode: Mode = "auto",
        tags: list[str] | None = None,
        group: str | None = None,
        version: str | None = None,
        log_model: bool | Literal["all"] = False,
        **kwargs: Any,
    ) -> None:
        if kwargs.pop("offline", False):  # WandbLogger's own switch, kept as an alias of mode=offline
            mode = "offline"
        self.mode = resolve_wandb_mode(mode)
        if self.mode != "online" and log_model:
            rank_zero_warn(
                f"W&B logger: log_model={log_model!r} needs an online run; mode is {self.mode}, turning it off"
            )
            log_model = False
        job = slurm_job_key()
        sweep = os.environ.get("WANDB_SWEEP_ID")  # the agent chooses the id: never pass one
        if job and not sweep:
            group = group or f"slurm-{job}"
            if version is None and kwargs.get("id") is None and self.mode == "online":
                version = f"slurm-{job}"
        self._user_named = name is not None
        rank_zero_info(f"W&B logger: mode={self.mode} ({wandb_mode_reason(mode)})")
        super().__init__(
            name=name,
            save_dir=save_dir,
            project=project or os.environ.get("WANDB_PROJECT", "clsvit"),
            version=None if sweep else version,
            log_model=log_model,
            # Passed to wandb.init: unlike WandbLogger(offline=True) it does not set WANDB_MODE for
            # the whole process (which would leak into later runs in the same process).
            mode=self.mode,
            tags=list(tags or []),
            group=group,
            **kwargs,
        )

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        # Lightning calls this once per fit/validate/test with the LightningModule, right after
        # log_hyperparams: the one place a logger sees the model. W&B lets the name and tags of a
        # live run change, so they are set here rather than at wandb.init.
        super().log_graph(model, input_array)
        backbone = find_backbone(model)
        if backbone is None or self.mode == "disabled":
            return
        info = describe_backbone(backbone)
        run = self.experiment
        if not self._user_named:
            run.name = info["name"]
        run.tags = tuple(dict.fromkeys([*(run.tags or ()), *info["tags"]]))
        for key, value in info["summary"].items():
            run.summary[key] = value
