"""A callback for the SLURM requeue test: sends the requeue signal mid-step and records what it sees."""

import json
import os
import signal
from pathlib import Path

import torch
from lightning.pytorch import Callback

SCHEDULES = ("lr", "weight_decay", "teacher_momentum", "teacher_temperature")


class SignalMidStep(Callback):
    """Sends SIGUSR1 to its own process between backward and the optimizer step of ``signal_at_step``;
    appends one JSON line per step (schedule values) to ``<root>/steps.jsonl``."""

    def __init__(self, signal_at_step: int = 2) -> None:
        self.signal_at_step = signal_at_step

    def _log(self, trainer, record):
        with (Path(trainer.default_root_dir) / "steps.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def on_train_start(self, trainer, pl_module):
        schedules = {name: pl_module.schedules[name].tolist() for name in SCHEDULES}
        self._log(trainer, {"event": "start", "global_step": trainer.global_step, "schedules": schedules})

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        values = {name: pl_module.scheduled(name) for name in SCHEDULES}
        self._log(trainer, {"event": "step", "global_step": trainer.global_step, **values})

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == self.signal_at_step:
            os.kill(os.getpid(), signal.SIGUSR1)  # the handler runs right here: mid-step

    def on_train_end(self, trainer, pl_module):
        root = Path(trainer.default_root_dir)
        index = len(list(root.glob("final_*.pt")))
        torch.save(pl_module.state_dict(), root / f"final_{index}.pt")
        self._log(trainer, {"event": "end", "global_step": trainer.global_step})
