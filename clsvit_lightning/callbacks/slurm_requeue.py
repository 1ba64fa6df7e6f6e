"""SLURM preemption: checkpoint at the next step boundary, requeue, stop; the restart resumes there.

Lightning's own auto-requeue saves the checkpoint inside the signal handler, i.e. wherever the
main thread happens to be (mid-backward, between the optimizer step and the EMA update...;
Lightning issue #21406; docs/operations.md#slurm). Here the handler only raises a flag. At the end of the next
training batch that completed an optimizer step, all ranks agree on the flag (any rank signalled
= all save, since saving is collective), save ``hpc_ckpt_<n>.ckpt`` in ``default_root_dir`` (the
name Lightning looks for when a SLURM job restarts with ``ckpt_path`` unset), rank 0 runs
``scontrol requeue <job>``, writes ``REQUEUED`` beside the checkpoint (removed when the restart
begins), and training stops cleanly.

Installing this handler first also keeps Lightning's mid-step handler away: Lightning only
registers its SIGUSR1 handler when the signal has none yet.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from clsvit_lightning.ops.wandb_logger import slurm_job_key

HPC_PREFIX = "hpc_ckpt_"
# Written beside the checkpoint when training stopped for a requeue, removed when the restart
# begins: a process that exits 0 with it present has not finished (``study/engine.py``).
REQUEUE_MARKER = "REQUEUED"


def hpc_checkpoints(root: str | Path) -> list[Path]:
    """``hpc_ckpt_<n>.ckpt`` files of ``root``, oldest (lowest n) first."""
    found = []
    for path in Path(root).glob(f"{HPC_PREFIX}*.ckpt"):
        match = re.fullmatch(rf"{HPC_PREFIX}(\d+)\.ckpt", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def stopping_for_requeue(trainer: Trainer) -> bool:
    """True once a :class:`StepBoundaryRequeue` of this fit has saved and stopped training.

    The epoch then ends early, mid-epoch, and the restart completes it: epoch-end evaluations
    (online k-NN, analysis) should wait for that real end instead of running in SLURM's grace period.
    """
    return any(isinstance(cb, StepBoundaryRequeue) and cb.saved_path is not None for cb in trainer.callbacks)


class StepBoundaryRequeue(Callback):
    """Flag-then-save handling of the SLURM requeue signal (see the module docstring).

    Args:
        requeue_signal: the signal of ``#SBATCH --signal=<name>@<seconds>`` (no ``B:`` prefix: every
            ``srun`` task must get it, the save is collective).
        requeue: run ``scontrol requeue <job id>`` after saving (False: only save and stop).
        keep_checkpoints: how many ``hpc_ckpt_*`` files to keep (one per preemption otherwise).
        only_under_slurm: do nothing unless Lightning detects a SLURM job.
    """

    def __init__(
        self,
        requeue_signal: str = "SIGUSR1",
        requeue: bool = True,
        keep_checkpoints: int = 1,
        only_under_slurm: bool = True,
    ) -> None:
        if not hasattr(signal, requeue_signal):
            raise ValueError(f"StepBoundaryRequeue: unknown requeue_signal {requeue_signal!r} (e.g. SIGUSR1)")
        if keep_checkpoints < 1:
            raise ValueError(f"StepBoundaryRequeue: keep_checkpoints must be >= 1, got {keep_checkpoints}")
        self.signum = getattr(signal, requeue_signal)
        self.requeue, self.keep_checkpoints, self.only_under_slurm = requeue, keep_checkpoints, only_under_slurm
        self.requested = False
        self.saved_path: Path | None = None
        self._previous_handler: Any = None
        self._installed = False
        self._step_at_batch_start = -1

    # ----------------------------------------------------------------- signal
    def _on_signal(self, signum: int, frame: Any) -> None:
        # Runs between two bytecodes of the main thread: only set a flag.
        self.requested = True

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or (self.only_under_slurm and not SLURMEnvironment.detect()):
            return
        self.requested, self.saved_path = False, None
        if trainer.is_global_zero:
            (Path(trainer.default_root_dir) / REQUEUE_MARKER).unlink(missing_ok=True)  # the restart has begun
        self._previous_handler = signal.signal(self.signum, self._on_signal)
        self._installed = True
        rank_zero_info(f"StepBoundaryRequeue: {signal.Signals(self.signum).name} saves at the next step boundary")

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._installed:
            signal.signal(self.signum, self._previous_handler or signal.SIG_DFL)
            self._installed = False

    # ---------------------------------------------------------- step boundary
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Under gradient accumulation only the batch that stepped the optimizer ends a step; every
        # rank takes the same branch (the global step is the same on all ranks).
        if not self._installed or trainer.global_step == self._step_at_batch_start:
            return
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        self.save_and_requeue(trainer)

    def save_and_requeue(self, trainer: Trainer) -> None:
        root = Path(trainer.default_root_dir)
        existing = hpc_checkpoints(root)
        number = 1 + max((int(p.stem[len(HPC_PREFIX) :]) for p in existing), default=0)
        path = root / f"{HPC_PREFIX}{number}.ckpt"
        trainer.save_checkpoint(path)  # collective: every rank calls it
        self.saved_path = path
        if trainer.is_global_zero:
            for old in hpc_checkpoints(root)[: -self.keep_checkpoints]:
                old.unlink(missing_ok=True)
            rank_zero_info(f"StepBoundaryRequeue: saved {path} at global step {trainer.global_step}")
            (root / REQUEUE_MARKER).write_text(f"{path.name} at global step {trainer.global_step}\n")
            if self.requeue:
                self._scontrol_requeue()
        trainer.should_stop = True

    def _scontrol_requeue(self) -> None:
        job = slurm_job_key()
        if not job or not re.fullmatch(r"[0-9_]+", job):
            rank_zero_warn(f"StepBoundaryRequeue: no valid SLURM job id ({job!r}); not requeueing")
            return
        try:
            result = subprocess.run(["scontrol", "requeue", job], check=False, capture_output=True, text=True)
        except FileNotFoundError:
            rank_zero_warn("StepBoundaryRequeue: `scontrol` not found on PATH; the job was not requeued")
            return
        if result.returncode:
            rank_zero_warn(
                f"StepBoundaryRequeue: `scontrol requeue {job}` failed ({result.returncode}): {result.stderr}"
            )
        else:
            rank_zero_info(f"StepBoundaryRequeue: requeued SLURM job {job}")
