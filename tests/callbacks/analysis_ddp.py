"""Run by test_analysis_callback.py in a subprocess: a 2-rank DDP fit with the analysis callback.

Without ``out_dir`` the callback asks ``trainer.log_dir`` for its folder, which broadcasts: a rank
that skipped the call would leave rank 0 waiting forever. The parent kills this after a timeout.
"""

import sys
from pathlib import Path

import cv2
import lightning.pytorch as pl
import numpy as np

from clsvit_lightning.callbacks import TokenAnalysisCallback
from tests.callbacks.test_analysis_callback import TinySelfDistillation, loader

if __name__ == "__main__":
    root = Path(sys.argv[1])
    (root / "images").mkdir(parents=True)
    for index in range(2):
        cv2.imwrite(str(root / "images" / f"{index}.png"), np.random.randint(0, 255, (40, 48, 3), np.uint8))
    callback = TokenAnalysisCallback(data=str(root / "images"), every_n_epochs=1, img_size=32)
    trainer = pl.Trainer(
        max_epochs=2, limit_train_batches=1, accelerator="cpu", devices=2,
        strategy="ddp_spawn_find_unused_parameters_true", logger=pl.loggers.CSVLogger(root, name="csv"),
        callbacks=[callback], enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root,
    )  # fmt: skip
    trainer.fit(TinySelfDistillation(), loader())
