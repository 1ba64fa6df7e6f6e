"""k-NN classification of any backbone's [CLS] features under ``clsvit validate`` (DINOv2's ``dinov2/eval/knn.py``).

Protocol: docs/protocols.md#k-nn-classification.

Features are the L2-normalised final-norm [CLS] (``backbone.forward``) of the evaluation pipeline
(resize 256, centre crop 224). For a query ``q`` with neighbours ``x_j`` (cosine ``s_j``, labels
``y_j``) among the ``k`` most similar memory-bank features, class ``c`` scores
``sum_j [y_j = c] exp(s_j / T)`` (``T = 0.07``, k in 10/20/100/200, as
:func:`clsvit_lightning.evaluation.knn.knn_classify`); reported: top-1, top-5, mean-per-class accuracy.

Distributed as in DINOv2: every rank holds a shard of the memory bank (extracted in
``on_validation_start`` from the datamodule's ``feature_dataloader(memory_bank_split)``); at each
validation step the query features of all ranks are gathered, each rank finds its shard's top-k,
and the per-shard lists are gathered and merged into the global top-k. The bank is never copied
whole to one device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from clsvit_lightning.errors import ConfigError, check_option_values
from clsvit_lightning.evaluation.knn import KNNResult, merge_neighbours, weighted_vote
from clsvit_lightning.models.vision_transformer import VisionTransformer
from clsvit_lightning.tasks.common import BackboneTask, counted_samples, freeze


def shard(loader: DataLoader, rank: int, world_size: int) -> DataLoader:
    """The same loader over the strided shard ``rank::world_size`` of its dataset, without padding."""
    indices = list(range(rank, len(loader.dataset), world_size))  # type: ignore[arg-type]
    return DataLoader(
        Subset(loader.dataset, indices),
        batch_size=loader.batch_size,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
    )


class KNNEvaluation(BackboneTask):
    """``clsvit validate --config configs/classification/knn.yaml``: k-NN accuracy of a frozen backbone.

    The datamodule gives the queries as its ``val_dataloader`` and the memory bank through
    ``feature_dataloader(split)`` (``ImageNetDataModule`` has both); batches are
    ``{"image": [B, 3, H, W], "label": [B]}``.
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        pretrained: str | None = None,
        ks: Sequence[int] = (10, 20, 100, 200),
        temperature: float = 0.07,
        memory_bank_split: str = "train",
        num_classes: int | None = None,
    ) -> None:
        """
        Args:
            backbone: the architecture of the checkpoint to evaluate.
            pretrained: weights to load (DINOv2/timm files, this project's checkpoints or exported backbones).
            ks: numbers of neighbours; those larger than the memory bank are skipped with a warning.
            temperature: ``T`` of the vote weights ``exp(s / T)``.
            memory_bank_split: the split whose features are the memory bank.
            num_classes: defaults to the datamodule's ``num_classes``, else the largest bank label + 1.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        if not ks or min(ks) < 1:
            raise ConfigError(f"KNNEvaluation: ks must be a non-empty list of positive integers, got {list(ks)}")
        check_option_values("KNNEvaluation", self.hparams, positive=("temperature",))
        self.backbone = freeze(backbone, pretrained, "KNNEvaluation")
        self._warned_skipped_ks = False
        self.results: list[KNNResult] = []

    def train(self, mode: bool = True) -> KNNEvaluation:
        super().train(mode)
        self.backbone.eval()  # always: no drop path
        return self

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """L2-normalised [CLS] features ``[B, D]``."""
        return F.normalize(self.backbone(images).float(), dim=1)

    # ------------------------------------------------------------ memory bank
    @torch.no_grad()
    def on_validation_start(self) -> None:
        trainer = self.trainer
        datamodule = getattr(trainer, "datamodule", None)
        if not hasattr(datamodule, "feature_dataloader"):
            raise ValueError(
                "KNNEvaluation needs a datamodule with feature_dataloader(split) for the memory bank "
                f"(e.g. ImageNetDataModule); got {type(datamodule).__name__}"
            )
        split = self.hparams.memory_bank_split
        loader = shard(datamodule.feature_dataloader(split), trainer.global_rank, trainer.world_size)
        rank_zero_info(f"k-NN: extracting the {split!r} memory bank ({len(loader.dataset)} images on rank 0)")
        features, labels = [], []
        with trainer.precision_plugin.forward_context():
            for batch in loader:
                features.append(self.features(batch["image"].to(self.device)))
                labels.append(batch["label"].to(self.device))
        dim = self.backbone.embed_dim
        self.bank_features = torch.cat(features) if features else torch.zeros(0, dim, device=self.device)
        self.bank_labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=self.device)
        self.bank_size = int(self._reduce(torch.tensor(len(self.bank_labels), device=self.device), "sum"))
        self.ks = sorted(k for k in set(self.hparams.ks) if k <= self.bank_size)
        if not self.ks:
            raise ConfigError(
                f"KNNEvaluation: all ks {list(self.hparams.ks)} exceed the memory bank size {self.bank_size}"
            )
        # A warning, not an error: the shipped ks are DINOv2's (10..200), and small banks (a subset,
        # the synthetic demos) should still report the ks that fit without editing the list. It is
        # said once per module, as a bank is rebuilt at every validation.
        skipped = sorted(k for k in set(self.hparams.ks) if k > self.bank_size)
        if skipped and not self._warned_skipped_ks:
            rank_zero_warn(
                f"KNNEvaluation: ks {skipped} exceed the memory bank size {self.bank_size} and are skipped; "
                f"reporting ks {self.ks}"
            )
            self._warned_skipped_ks = True
        self.num_classes = self.hparams.num_classes or getattr(datamodule, "num_classes", None)
        if self.num_classes is None:
            largest = self.bank_labels.max() if len(self.bank_labels) else torch.tensor(0, device=self.device)
            self.num_classes = int(self._reduce(largest, "max")) + 1
        # Per k: correct top-1 and top-5 per class; queries per class.
        self.correct = torch.zeros(len(self.ks), 2, self.num_classes, device=self.device)
        self.queries_per_class = torch.zeros(self.num_classes, device=self.device)

    def _reduce(self, value: Tensor, operation: str) -> Tensor:
        if self.trainer.world_size == 1:
            return value
        if operation == "max":
            return self.all_gather(value).max()
        return self.trainer.strategy.reduce(value, reduce_op=operation)

    # ------------------------------------------------------------------ queries
    def nearest_neighbours(self, queries: Tensor) -> tuple[Tensor, Tensor]:
        """Similarities and labels ``[B, k_max]`` of this rank's queries' global nearest neighbours."""
        k_max, world_size = self.ks[-1], self.trainer.world_size
        everyone = queries if world_size == 1 else self.all_gather(queries).flatten(0, 1)  # [W * B, D]
        local_k = min(k_max, len(self.bank_labels))
        # fp32 even under a mixed-precision trainer: bf16 rounds cosines near 1 to steps of 0.004,
        # which reorders near neighbours (and its exp() would not scatter into the fp32 votes).
        with torch.autocast(self.device.type, enabled=False):
            similarities, index = (everyone @ self.bank_features.T).topk(local_k, dim=1)  # [W * B, k']
        labels = self.bank_labels[index]
        if world_size == 1:
            return similarities, labels
        # Pad short shards so that every rank sends [W * B, k_max]; -inf is never picked.
        padding = k_max - local_k
        similarities = F.pad(similarities, (0, padding), value=-float("inf"))
        labels = F.pad(labels, (0, padding), value=0)
        similarities, labels = merge_neighbours(self.all_gather(similarities), self.all_gather(labels), k_max)
        mine = slice(self.trainer.global_rank * len(queries), (self.trainer.global_rank + 1) * len(queries))
        return similarities[mine], labels[mine]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        similarities, neighbour_labels = self.nearest_neighbours(self.features(batch["image"]))
        # Every query takes part in the gathers; those the sampler repeats are then left out of the counts.
        counted = counted_samples(self.trainer, batch_idx, len(similarities), device=similarities.device)
        labels = batch["label"][counted]
        similarities, neighbour_labels = similarities[counted], neighbour_labels[counted]
        self.queries_per_class += torch.bincount(labels, minlength=self.num_classes)
        temperature = self.hparams.temperature
        for index, k in enumerate(self.ks):
            scores = weighted_vote(similarities[:, :k], neighbour_labels[:, :k], self.num_classes, temperature)
            ranked = scores.topk(min(5, self.num_classes), dim=1).indices  # [B, 5]
            for column, correct in enumerate((ranked[:, 0] == labels, (ranked == labels[:, None]).any(dim=1))):
                self.correct[index, column] += torch.bincount(labels[correct], minlength=self.num_classes)

    def on_validation_epoch_end(self) -> None:
        correct = self._reduce(self.correct, "sum")
        queries_per_class = self._reduce(self.queries_per_class, "sum")
        present = queries_per_class > 0
        total = queries_per_class.sum()
        self.results = []
        for index, k in enumerate(self.ks):
            top1, top5 = correct[index]
            self.results.append(
                KNNResult(
                    k=k,
                    top1=100 * (top1.sum() / total).item(),
                    top5=100 * (top5.sum() / total).item(),
                    mean_per_class=100 * (top1[present] / queries_per_class[present]).mean().item(),
                )
            )
        self.log_dict({name: value for r in self.results for name, value in r.as_dict("knn").items()})
        del self.bank_features, self.bank_labels
