"""Lightning callbacks: checkpoints for long runs, online evaluation and analysis during training."""

from clsvit_lightning.callbacks.analysis import TokenAnalysisCallback
from clsvit_lightning.callbacks.checkpointing import RunCheckpoint
from clsvit_lightning.callbacks.online_knn import OnlineKNN
from clsvit_lightning.callbacks.throughput import ImageThroughputMonitor

__all__ = ["ImageThroughputMonitor", "OnlineKNN", "RunCheckpoint", "TokenAnalysisCallback"]
