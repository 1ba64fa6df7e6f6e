"""Online k-NN accuracy of the backbone being trained (DINO protocol: k=20, T=0.07) every N epochs.

Features are the normed [CLS] of the module's evaluated backbone (the teacher for self-distillation),
extracted under ``torch.no_grad`` on a labelled ImageFolder split for the memory bank and another
for the queries, both with the evaluation pipeline (resize 256, centre crop 224). Under DDP each
rank extracts a shard and the shards are gathered (padding duplicates removed by sample index).

``root`` defaults to the training data module's ``root`` (``ROOT/train`` and ``ROOT/val`` of an
ImageNet-layout folder), so a recipe that sets ``data.init_args.root`` evaluates on the same dataset.
It runs every ``every_n_epochs`` epochs and after the last epoch of the fit (``max_epochs`` or
``max_steps`` reached), so the final value is always logged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from clsvit_lightning.callbacks.slurm_requeue import stopping_for_requeue
from clsvit_lightning.data.datasets.imagenet import ImageFolderDataset
from clsvit_lightning.data.transforms.classification import classification_transform
from clsvit_lightning.data.transforms.collate import collate_labelled
from clsvit_lightning.evaluation.knn import knn_classify


class _Indexed(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "index": index}


def _collate(samples: list[dict]) -> dict[str, Tensor]:
    batch = collate_labelled([{k: v for k, v in s.items() if k != "index"} for s in samples])
    batch["index"] = torch.tensor([s["index"] for s in samples])
    return batch


def _last_epoch(trainer: Trainer) -> bool:
    """True when this epoch is the fit's last: ``max_epochs`` reached, or ``max_steps`` reached in it."""
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    if max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs:
        return True
    return max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps


class OnlineKNN(Callback):
    """k-NN top-1/top-5/mean-per-class of the teacher, logged as ``online_knn/k<k>_*``.

    Args:
        root: ImageFolder root holding ``train_split`` and ``val_split``; None: the data module's ``root``.
    """

    def __init__(
        self,
        root: str | None = None,
        train_split: str = "train",
        val_split: str = "val",
        every_n_epochs: int = 1,
        k: int = 20,
        temperature: float = 0.07,
        crop_size: int = 224,
        resize_size: int = 256,
        batch_size: int = 64,
        num_workers: int = 0,
        max_train_samples: int | None = None,
        backbone_attribute: str = "teacher_backbone",
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"OnlineKNN every_n_epochs must be >= 1, got {every_n_epochs}")
        self.root = Path(root) if root is not None else None
        self.train_split, self.val_split = train_split, val_split
        self.every_n_epochs, self.k, self.temperature = every_n_epochs, k, temperature
        self.crop_size, self.resize_size = crop_size, resize_size
        self.batch_size, self.num_workers, self.max_train_samples = batch_size, num_workers, max_train_samples
        self.backbone_attribute = backbone_attribute
        self.last_results: dict[str, float] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.root is None:
            data_root = getattr(getattr(trainer, "datamodule", None), "root", None)
            if data_root is None:
                raise ValueError(
                    "OnlineKNN: no root given and the data module has no `root`; set "
                    "--trainer.callbacks.root to an ImageFolder root with train/ and val/"
                )
            self.root = Path(data_root)
        transform = classification_transform("eval", self.crop_size, self.resize_size)
        train = ImageFolderDataset(self.root, self.train_split, transform=transform)
        self.train_set: Dataset = train
        if self.max_train_samples is not None and self.max_train_samples < len(train):
            # An evenly spread subset keeps every class in the memory bank.
            step = len(train) / self.max_train_samples
            self.train_set = Subset(train, [int(i * step) for i in range(self.max_train_samples)])
        self.val_set = ImageFolderDataset(self.root, self.val_split, transform=transform, classes=train.classes)
        self.num_classes = len(train.classes)
        if not hasattr(pl_module, self.backbone_attribute):
            raise ValueError(
                f"OnlineKNN: {type(pl_module).__name__} has no attribute {self.backbone_attribute!r} "
                "(set backbone_attribute to the backbone to evaluate)"
            )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        due = (trainer.current_epoch + 1) % self.every_n_epochs == 0 or _last_epoch(trainer)
        if not due or stopping_for_requeue(trainer):
            return  # not due; or stopped mid-epoch for a requeue: the restart ends this epoch
        backbone = getattr(pl_module, self.backbone_attribute)
        was_training = backbone.training
        backbone.eval()
        train_features, train_labels = self._extract(trainer, pl_module, backbone, self.train_set)
        val_features, val_labels = self._extract(trainer, pl_module, backbone, self.val_set)
        backbone.train(was_training)
        results = knn_classify(
            train_features, train_labels, val_features, val_labels, (self.k,), self.temperature, self.num_classes
        )
        self.last_results = {name: value for r in results for name, value in r.as_dict("online_knn").items()}
        pl_module.log_dict(self.last_results, on_epoch=True, rank_zero_only=False)

    @torch.no_grad()
    def _extract(self, trainer: Trainer, pl_module: LightningModule, backbone, dataset: Dataset):  # noqa: ANN001
        dataset = _Indexed(dataset)
        sampler = None
        if trainer.world_size > 1:
            sampler = DistributedSampler(dataset, trainer.world_size, trainer.global_rank, shuffle=False)
        loader = DataLoader(
            dataset, self.batch_size, sampler=sampler, num_workers=self.num_workers, collate_fn=_collate
        )
        features, labels, indices = [], [], []
        for batch in loader:
            features.append(backbone(batch["image"].to(pl_module.device)).float())  # [b, D]
            labels.append(batch["label"].to(pl_module.device))
            indices.append(batch["index"].to(pl_module.device))
        features, labels, indices = torch.cat(features), torch.cat(labels), torch.cat(indices)
        if trainer.world_size > 1:
            features, labels, indices = (pl_module.all_gather(t).flatten(0, 1) for t in (features, labels, indices))
            # The distributed sampler pads with repeated samples: keep one copy of each index.
            keep = torch.zeros(len(dataset), dtype=torch.long, device=indices.device)
            keep[indices] = torch.arange(len(indices), device=indices.device)
            features, labels = features[keep], labels[keep]
        return features.cpu(), labels.cpu()
