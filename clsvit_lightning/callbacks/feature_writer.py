"""Writes ``clsvit predict`` features as ``.npy`` arrays in dataset order, whatever the sharding.

Each rank saves its batches as they come (``write_interval="batch"``: nothing accumulates in
memory); at the end rank 0 merges the shards into one memory-mapped array per feature, row ``i``
for dataset sample ``i``. A sampler that pads the last shard with repeats writes a row twice with
the same values, so the merge counts rows, not shards, and checks that every sample arrived.

Output folder::

    cls.npy [N, D]   registers.npy [N, R, D]   patch_mean.npy [N, D]   patches.npy [N, T, D] (optional)
    files.txt        one image path per row (relative to data.root when the DataModule has one)
    meta.json        shapes, dtype, the checkpoint and the backbone configuration
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter


class FeatureWriter(BasePredictionWriter):
    """Args: output_dir: where the arrays go (created; existing feature files are overwritten)."""

    def __init__(self, output_dir: str) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)

    @property
    def shard_dir(self) -> Path:
        return self.output_dir / ".shards"

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.is_global_zero:
            shutil.rmtree(self.shard_dir, ignore_errors=True)  # a previous, interrupted extraction
            self.shard_dir.mkdir(parents=True, exist_ok=True)
        trainer.strategy.barrier()

    def write_on_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, prediction: Any, batch_indices: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        arrays = {name: tensor.detach().cpu().numpy() for name, tensor in prediction.items()}
        np.savez(self.shard_dir / f"rank{trainer.global_rank:04d}-{dataloader_idx}-{batch_idx:08d}.npz", **arrays)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.strategy.barrier()  # every rank's shards are on disk
        if trainer.is_global_zero:
            dataset = trainer.predict_dataloaders.dataset  # type: ignore[union-attr]
            self._merge(len(dataset), getattr(dataset, "files", None), trainer, pl_module)
        trainer.strategy.barrier()

    def _merge(self, num_samples: int, files: list[Path] | None, trainer: Trainer, pl_module: LightningModule) -> None:
        shards = sorted(self.shard_dir.glob("*.npz"))
        arrays: dict[str, np.ndarray] = {}
        written = np.zeros(num_samples, dtype=bool)
        for shard in shards:
            with np.load(shard) as data:
                index = data["index"]
                for name in data.files:
                    if name == "index":
                        continue
                    if name not in arrays:
                        arrays[name] = np.lib.format.open_memmap(
                            self.output_dir / f"{name}.npy", mode="w+", dtype=np.float32,
                            shape=(num_samples, *data[name].shape[1:]),
                        )  # fmt: skip
                    arrays[name][index] = data[name]
                written[index] = True
        if not written.all():
            missing = np.flatnonzero(~written)
            raise RuntimeError(
                f"FeatureWriter: {len(missing)} of {num_samples} samples got no features (first: {missing[0]})"
            )
        for array in arrays.values():
            array.flush()
        root = getattr(trainer.datamodule, "hparams", {}).get("root") if trainer.datamodule is not None else None
        if files is not None:
            names = [str(Path(f).relative_to(root)) if root else str(f) for f in files]
            (self.output_dir / "files.txt").write_text("\n".join(names) + "\n")
        backbone = getattr(pl_module, "backbone", None)
        meta = {
            "num_samples": num_samples,
            "arrays": {name: list(array.shape) for name, array in arrays.items()},
            "dtype": "float32",
            "pretrained": pl_module.hparams.get("pretrained"),
            "backbone": getattr(backbone, "config", None),
            "precision": str(trainer.precision),
            "torch": torch.__version__,
        }
        (self.output_dir / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        shutil.rmtree(self.shard_dir, ignore_errors=True)
