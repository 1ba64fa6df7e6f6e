"""What the continuation tests share: a quiet one-process CPU trainer and a per-step record."""

from lightning.pytorch import Callback, Trainer


def cpu_trainer(root, **kwargs) -> Trainer:
    """One CPU process writing under ``root``; no logger, progress bar or model summary."""
    return Trainer(
        default_root_dir=root, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, **kwargs,
    )  # fmt: skip


class StepRecord(Callback):
    """The loss of every step, and the module's tensors as each step starts (keyed by global step)."""

    def __init__(self):
        self.losses, self.states = {}, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.states[trainer.global_step] = {k: v.clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = outputs["loss"].item()
