"""``ModelCheckpoint`` for long runs: one ``last.ckpt`` that is always the newest, a folder checked
at start-up, and never a checkpoint of non-finite weights.

Lightning's own callback, with its defaults, names the newest state ``last-v1.ckpt`` when a
``last.ckpt`` from an earlier job is in the folder (a SLURM requeue, a resumed run), so scripts
reading ``last.ckpt`` pick up the stale one; it finds an unwritable folder only at the first save,
hours into a run. Recipes use two of these: a frequent ``last.ckpt`` (``every_n_train_steps``,
``save_top_k: 0``) and the periodic keeps (``every_n_epochs``, ``save_top_k: -1``).
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class CheckpointFolderError(PermissionError):
    """The checkpoint folder cannot be created or written."""


class NonFiniteWeightsError(RuntimeError):
    """A checkpoint was about to store NaN or infinite weights."""


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is overwritten in place (no ``last-v1``), whose folder
    is checked writable in ``setup``, and which refuses to save non-finite parameters.

    Every argument is ``ModelCheckpoint``'s; only ``enable_version_counter`` defaults to False.
    """

    def __init__(self, *args: Any, enable_version_counter: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, enable_version_counter=enable_version_counter, **kwargs)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and trainer.is_global_zero and self.dirpath:
            check_writable(str(self.dirpath))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_if_stale(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_last_if_stale(trainer)  # a run that stops mid-epoch (max_steps) ends on its final state

    def _save_last_if_stale(self, trainer: Trainer) -> None:
        """``last.ckpt`` at this step: Lightning 2.6 writes it at an epoch end only beside a top-k save."""
        if not self.save_last or trainer.sanity_checking or trainer.fast_dev_run:
            return
        if trainer.state.fn != "fit" or self._last_global_step_saved == trainer.global_step:
            return
        if self._should_save_on_train_epoch_end(trainer) or trainer.global_step >= trainer.max_steps > 0:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        bad = non_finite_parameters(trainer.lightning_module)
        # Every rank decides together (FSDP shards): one rank raising alone would hang the others.
        if trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            bad = bad or ["(on another rank)"]
            raise NonFiniteWeightsError(
                f"not writing {filepath}: {len(bad)} parameter tensors hold NaN or inf (first: {bad[0]}); the "
                "previous checkpoints are intact. Resume from one with a lower lr (--ckpt_path, --model.init_args.*)."
            )
        super()._save_checkpoint(trainer, filepath)


def check_writable(folder: str) -> None:
    """Create ``folder`` and write a file in it, or raise naming the folder and why."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise CheckpointFolderError(
            f"checkpoint folder {folder} is not writable ({error.strerror or error}); set "
            "trainer.default_root_dir or the checkpoint callback's dirpath to a folder you can write"
        ) from None


def non_finite_parameters(module: torch.nn.Module) -> list[str]:
    """Names of the parameters and floating buffers that hold NaN or inf."""
    bad = []
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point() and tensor.numel() and not math.isfinite(tensor.detach().float().sum().item()):
            if not torch.isfinite(tensor).all():
                bad.append(name)
    return bad
