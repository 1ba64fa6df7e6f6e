"""A ``SaveConfigCallback`` that survives requeues and gives every W&B run its own copy of the config.

With ``WandbLogger`` the trainer's log dir is the logger's ``save_dir`` (not a versioned folder),
and a SLURM requeue restarts in the same ``default_root_dir``: the stock callback then finds an
existing ``config.yaml`` and stops the run (Lightning issue #7679). This one overwrites the shared
file (the latest run's config) and also stores the config inside each W&B run, as a file in the
run's folder (synced with it) and in the run's config, so no run loses the config it ran with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

RUN_CONFIG_NAME = "clsvit_config.yaml"


class SaveConfigToLoggers(SaveConfigCallback):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["overwrite"] = True  # a requeue or a second run into the same folder is normal here
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Called on rank 0 only, after config.yaml was written to the log dir: no collectives here.
        text = self.parser.dump(self.config, skip_none=False)
        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            run = logger.experiment
            run_dir = getattr(run, "dir", None)
            if run_dir:  # a disabled run has no folder
                Path(run_dir, RUN_CONFIG_NAME).write_text(text)
            run.config.update({"cli": yaml.safe_load(text)}, allow_val_change=True)
