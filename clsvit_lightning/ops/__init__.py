"""Operations: W&B logging with an offline decision, SLURM requeue at step boundaries, local sweeps.

Lightning-facing classes are importable from here so configs can name them briefly
(``clsvit_lightning.ops.ClsvitWandbLogger``).
"""

from clsvit_lightning.ops.results import ResultsFile, read_run_metrics
from clsvit_lightning.ops.save_config import SaveConfigToLoggers
from clsvit_lightning.ops.slurm_requeue import StepBoundaryRequeue
from clsvit_lightning.ops.wandb_logger import ClsvitWandbLogger, has_wandb_credentials, resolve_wandb_mode

__all__ = [
    "ClsvitWandbLogger",
    "ResultsFile",
    "SaveConfigToLoggers",
    "StepBoundaryRequeue",
    "has_wandb_credentials",
    "read_run_metrics",
    "resolve_wandb_mode",
]
