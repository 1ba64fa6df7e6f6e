"""Lightning callbacks: checkpoints for long runs, online evaluation and analysis during training,
the run's results file and config, and SLURM requeue at step boundaries."""

from clsvit_lightning.callbacks.analysis import TokenAnalysisCallback
from clsvit_lightning.callbacks.checkpointing import RunCheckpoint
from clsvit_lightning.callbacks.online_knn import OnlineKNN
from clsvit_lightning.callbacks.results_file import ResultsFile
from clsvit_lightning.callbacks.save_config import SaveConfigToLoggers
from clsvit_lightning.callbacks.slurm_requeue import StepBoundaryRequeue
from clsvit_lightning.callbacks.throughput import ImageThroughputMonitor

__all__ = [
    "ImageThroughputMonitor",
    "OnlineKNN",
    "ResultsFile",
    "RunCheckpoint",
    "SaveConfigToLoggers",
    "StepBoundaryRequeue",
    "TokenAnalysisCallback",
]
