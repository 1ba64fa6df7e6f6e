"""Lightning callbacks: online evaluation and analysis during training."""

from clsvit_lightning.callbacks.analysis import TokenAnalysisCallback
from clsvit_lightning.callbacks.online_knn import OnlineKNN

__all__ = ["OnlineKNN", "TokenAnalysisCallback"]
