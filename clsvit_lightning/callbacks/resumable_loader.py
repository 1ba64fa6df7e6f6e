"""Resume the train loader where a checkpoint left it: position, epoch order and sample keys.

The training tasks add this callback themselves (``configure_callbacks``), so exact resume does not
depend on which checkpoint callback a config uses. See ``resume_train_loader`` in
``data/datamodules/loaders.py`` for why the moment matters, and ``data/seeding.py`` for the keys.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from clsvit_lightning.data.datamodules.loaders import resume_train_loader


class ResumableTrainLoader(Callback):
    """After a restore, continue the train loader from the checkpoint's position in the right epoch."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        resume_train_loader(trainer)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # Saved after an epoch's last batch, the loader's position points at the end of an epoch that
        # is over; restored, it would replay that epoch's order. The next epoch starts afresh instead.
        progress = trainer.fit_loop.epoch_loop.batch_progress
        if progress.is_last_batch or progress.current.processed >= trainer.num_training_batches:
            fit_loop_state = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
            if "combined_loader" in fit_loop_state:
                fit_loop_state["combined_loader"] = []
