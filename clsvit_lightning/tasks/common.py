"""What the tasks share: the backbone in their checkpoints, its pretrained weights, the global batch,
the non-finite loss stop, and counting each evaluation sample once under DDP.

Every task is a :class:`BackboneTask`: a ``LightningModule`` around one ``VisionTransformer`` given
as its ``backbone`` argument. Its checkpoints record the backbone's architecture as
``checkpoint["backbone_config"]`` (beside the hyper-parameters, not among them: ``--ckpt_path``
feeds those back as init arguments), so ``Task.load_from_checkpoint(path)`` rebuilds the backbone
without being told it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.utilities.cloud_io import _load as pl_load
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DistributedSampler

from clsvit_lightning.models.checkpoint import load_pretrained
from clsvit_lightning.models.formats.sources import read_weights
from clsvit_lightning.models.vision_transformer import VisionTransformer
from clsvit_lightning.training.schedules import scaled_learning_rate

# True while load_from_checkpoint builds a task: its state dict brings the backbone weights, so
# `pretrained` (which may have moved since) is not read again.
_weights_from_checkpoint: ContextVar[bool] = ContextVar("weights_from_checkpoint", default=False)


# ---------------------------------------------------------------------------------------- backbone
class BackboneTask(LightningModule):
    """A ``LightningModule`` whose checkpoints rebuild its ``VisionTransformer`` (see the module docstring)."""

    def checkpointed_backbone(self) -> VisionTransformer:
        """The backbone whose ``config`` the checkpoints record."""
        return self.backbone

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["backbone_config"] = dict(self.checkpointed_backbone().config)

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike | IO,
        map_location: Any = None,
        hparams_file: str | os.PathLike | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> BackboneTask:
        """Lightning's ``load_from_checkpoint`` with ``backbone`` rebuilt from the checkpoint unless given.

        ``pretrained`` is not read again: the checkpoint's state dict holds the backbone weights.
        """
        if "backbone" not in kwargs:
            config = _saved_backbone_config(checkpoint_path, weights_only)
            if config is not None:  # else: as Lightning would (a config among the hyper-parameters, or an error)
                kwargs["backbone"] = VisionTransformer(**config)
        with _restoring_weights():
            return super().load_from_checkpoint(
                checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs
            )


def _saved_backbone_config(checkpoint_path: str | os.PathLike | IO, weights_only: bool | None) -> dict[str, Any] | None:
    if isinstance(checkpoint_path, (str, os.PathLike)) and Path(checkpoint_path).is_file():
        # Memory-mapped: only the small config is read here, the tensors once, by Lightning.
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=weights_only, mmap=True)
    else:  # a URL or an open file
        checkpoint = pl_load(checkpoint_path, map_location="cpu", weights_only=weights_only)
        if hasattr(checkpoint_path, "seek"):
            checkpoint_path.seek(0)
    config = checkpoint.get("backbone_config")
    return dict(config) if config is not None else None


@contextmanager
def _restoring_weights() -> Iterator[None]:
    token = _weights_from_checkpoint.set(True)
    try:
        yield
    finally:
        _weights_from_checkpoint.reset(token)


def load_backbone_weights(
    backbone: VisionTransformer, pretrained: str | None, owner: str, warn_if_random: bool = True
) -> Mapping[str, object] | None:
    """Load ``pretrained`` (any file ``load_pretrained`` reads) into ``backbone`` and say what was loaded.

    Returns what the file holds, for callers that take more than the backbone from it (the heads of
    a continued pretraining); None when nothing was read. Without ``pretrained`` the backbone keeps
    its random initialisation: allowed (tests, baselines, finetuning from scratch), but said once
    (``warn_if_random``) where the numbers would be those of an untrained network.
    """
    if _weights_from_checkpoint.get():
        return None
    if not pretrained:
        if warn_if_random:
            rank_zero_warn(
                f"{owner}: pretrained is null, so the backbone is randomly initialised and its features are those "
                "of an untrained network; give --model.init_args.pretrained <checkpoint, exported backbone or "
                "DINOv2/timm weights>"
            )
        return None
    raw = read_weights(pretrained)  # read once: the caller may take heads from it too
    report = load_pretrained(backbone, raw, source=str(pretrained))
    rank_zero_info(
        f"{owner}: loaded {report.source} (warm-started {len(report.warm_started)} specialized parameters, "
        f"dropped {len(report.dropped)} non-backbone keys)"
    )
    return raw


def unwrapped_tensors(raw: Mapping[str, object]) -> dict[str, Tensor]:
    """The tensors of a checkpoint under its wrappers (``state_dict``, ``model``, ``teacher``), without ``module.``."""
    state: Mapping[str, object] = raw
    while wrapper := next((k for k in ("state_dict", "model", "teacher") if isinstance(state.get(k), Mapping)), None):
        state = state[wrapper]  # type: ignore[assignment]
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}


def freeze(backbone: VisionTransformer, pretrained: str | None, owner: str) -> VisionTransformer:
    """Load ``pretrained`` (:func:`load_backbone_weights`) and freeze: no gradients, eval mode."""
    load_backbone_weights(backbone, pretrained, owner)
    return backbone.requires_grad_(False).eval()


# ------------------------------------------------------------------------------------ optimisation
def global_batch_size(trainer: Trainer, needed_by: str) -> int:
    """Per-device batch (the datamodule's ``batch_size`` attribute or hyperparameter) x devices x accumulation."""
    datamodule = getattr(trainer, "datamodule", None)
    per_device = getattr(datamodule, "batch_size", None)
    if per_device is None:
        per_device = getattr(datamodule, "hparams", {}).get("batch_size")
    if per_device is None:
        raise ValueError(
            f"{needed_by} needs the per-device batch size: give the datamodule a `batch_size` attribute or "
            "hyperparameter, or use lr_scaling_rule 'none' with a learning rate for the global batch"
        )
    return int(per_device) * trainer.world_size * trainer.accumulate_grad_batches


def batch_scaled_lr(trainer: Trainer, base_lr: float, rule: str, owner: str) -> float:
    """``base_lr`` scaled to the global batch by ``rule`` (``scaled_learning_rate``); ``none``: as given."""
    if rule == "none":
        return base_lr
    return scaled_learning_rate(base_lr, global_batch_size(trainer, f"{owner}: lr_scaling_rule={rule!r}"), rule)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops before the optimizer step."""


def check_finite_loss(loss: Tensor, step: int, terms: Mapping[str, Tensor] | None = None) -> None:
    """Raise :class:`NonFiniteLossError` naming the step (and each term) if ``loss`` is NaN or infinite.

    Called before the optimizer step, so the weights and the last saved checkpoint stay good.
    """
    if torch.isfinite(loss).item():
        return
    values = {name: float(value) for name, value in (terms or {}).items()}
    detail = f" ({values})" if values else ""
    raise NonFiniteLossError(
        f"non-finite loss at step {step}{detail}; training stopped before the optimizer step, so the last saved "
        "checkpoint is intact. Lower the lr or check the data, then resume: `clsvit fit ... "
        "--model.init_args.base_lr <lower> --ckpt_path <checkpoint>` (the values given at resume time are used)."
    )


# -------------------------------------------------------------------------------------- evaluation
def sampler_padding_mask(positions: Tensor, num_samples: int, num_replicas: int, rank: int) -> Tensor:
    """True for the samples a ``DistributedSampler(drop_last=False)`` repeats to even out the ranks.

    The sampler pads its index list to ``ceil(N / W) * W`` by repeating its head and gives rank ``r``
    the entries ``r, r + W, r + 2W, ...``; the ``i``-th sample of rank ``r`` is a repeat iff
    ``r + i * W >= N`` (shuffled or not: the repeats are appended after the shuffle).
    """
    return rank + positions * num_replicas >= num_samples


def counted_samples(
    trainer: Trainer, batch_idx: int, batch_size: int, dataloader_idx: int = 0, device: torch.device | None = None
) -> Tensor:
    """``[B]`` bool: False for the samples of this evaluation batch that only repeat others.

    Masking the repeats of the evaluation ``DistributedSampler`` counts each sample once, so
    dataset-level metrics under DDP equal the single-process ones. All True without such a sampler.
    """
    loaders = trainer.test_dataloaders if trainer.testing else trainer.val_dataloaders
    loader = loaders[dataloader_idx] if isinstance(loaders, (list, tuple)) else loaders
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last or loader.batch_size is None:
        return torch.ones(batch_size, dtype=torch.bool, device=device)
    positions = torch.arange(batch_size, device=device) + batch_idx * loader.batch_size
    return ~sampler_padding_mask(positions, len(sampler.dataset), sampler.num_replicas, sampler.rank)
