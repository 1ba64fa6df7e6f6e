"""Operations: W&B logging with an offline decision, run metrics read back, sweep files, Pareto fronts.

The logger is importable from here so configs can name it briefly
(``clsvit_lightning.ops.ClsvitWandbLogger``); the callbacks of long runs (results file, config
saver, SLURM requeue) live in ``clsvit_lightning.callbacks``.
"""

from clsvit_lightning.ops.results import read_run_metrics
from clsvit_lightning.ops.wandb_logger import ClsvitWandbLogger, has_wandb_credentials, resolve_wandb_mode

__all__ = ["ClsvitWandbLogger", "has_wandb_credentials", "read_run_metrics", "resolve_wandb_mode"]
