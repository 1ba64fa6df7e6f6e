"""Linear probe on a frozen backbone: a grid of linear classifiers trained jointly (``dinov2/eval/linear.py``).

Protocol: docs/protocols.md#linear-classification-probe.

Features are ``backbone.get_intermediate_layers(images, n, return_class_token=True)`` (final norm
applied) of the last ``n = max(n_last_blocks_options)`` blocks, computed once per batch without
gradients. Each classifier reads DINOv2's ``create_linear_input``:
``[cls_{L-n+1}, ..., cls_L]`` concatenated, plus ``mean_i(patch_{L,i})`` with avgpool, i.e.
``(n + avgpool) * D`` inputs. One classifier per (n_last_blocks, avgpool, lr) of the grid, each in
its own SGD parameter group (momentum 0.9, no weight decay) with lr ``lr * global_batch / 256``
and a cosine decay to 0; the loss is the sum of the classifiers' cross-entropies (each gradient
reaches only its own classifier). The best classifier on the validation split is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from clsvit_lightning.callbacks.resumable_loader import ResumableTrainLoader
from clsvit_lightning.errors import ConfigError, check_option_values
from clsvit_lightning.models.vision_transformer import VisionTransformer
from clsvit_lightning.tasks.common import BackboneTask, batch_scaled_lr, counted_samples, freeze
from clsvit_lightning.training.schedules import cosine_schedule, value_at

DINOV2_LEARNING_RATES = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)


def create_linear_input(blocks: Sequence[tuple[Tensor, Tensor]], use_n_blocks: int, use_avgpool: bool) -> Tensor:
    """``(patches [B, N, D], cls [B, D])`` per block, oldest first -> classifier input ``[B, (n + avgpool) D]``."""
    last = blocks[-use_n_blocks:]
    output = torch.cat([cls for _, cls in last], dim=-1)  # [B, n * D], block order
    if use_avgpool:
        output = torch.cat([output, last[-1][0].mean(dim=1)], dim=-1)  # + mean patch of the last block
    return output.float()


def head_name(n_last_blocks: int, use_avgpool: bool, lr: float) -> str:
    """``blocks4_avgpool_lr0p001``: module names may not contain dots."""
    return f"blocks{n_last_blocks}_{'avgpool' if use_avgpool else 'cls'}_lr{lr:g}".replace(".", "p")


class LinearProbe(BackboneTask):
    """``clsvit fit --config configs/classification/linear.yaml``: linear classifiers on frozen features."""

    def __init__(
        self,
        backbone: VisionTransformer,
        pretrained: str | None = None,
        num_classes: int = 1000,
        n_last_blocks_options: Sequence[int] = (1, 4),
        avgpool_options: Sequence[bool] = (False, True),
        learning_rates: Sequence[float] = DINOV2_LEARNING_RATES,
        lr_scaling_rule: Literal["linear_wrt_256", "sqrt_wrt_1024", "none"] = "linear_wrt_256",
        momentum: float = 0.9,
    ) -> None:
        """
        Args:
            backbone: the architecture of the checkpoint to evaluate.
            pretrained: weights to load (DINOv2/timm files, this project's checkpoints or exported backbones).
            num_classes: classifier outputs.
            n_last_blocks_options: how many last blocks' [CLS] a classifier reads (DINOv2: 1 and 4).
            avgpool_options: whether it also reads the mean patch token of the last block.
            learning_rates: the lr grid, for a global batch of 256 under ``linear_wrt_256``.
            lr_scaling_rule: how the grid scales with the global batch size.
            momentum: SGD momentum.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        if not n_last_blocks_options or not all(1 <= n <= backbone.depth for n in n_last_blocks_options):
            raise ValueError(
                f"n_last_blocks_options must lie in 1..{backbone.depth} (the backbone depth), "
                f"got {list(n_last_blocks_options)}"
            )
        if not avgpool_options:
            raise ConfigError(f"LinearProbe: avgpool_options must be non-empty, got {list(avgpool_options)}")
        if not learning_rates or not all(lr > 0 for lr in learning_rates):
            raise ConfigError(f"LinearProbe: learning_rates must be non-empty and all > 0, got {list(learning_rates)}")
        check_option_values("LinearProbe", self.hparams, unit_interval=("momentum",))
        self.backbone = freeze(backbone, pretrained, "LinearProbe")
        self.heads = nn.ModuleDict()
        self.head_inputs: dict[str, tuple[int, bool]] = {}
        self.head_learning_rates: dict[str, float] = {}
        for n_last_blocks in sorted(set(n_last_blocks_options)):
            for use_avgpool in sorted(set(avgpool_options)):
                for lr in learning_rates:
                    name = head_name(n_last_blocks, use_avgpool, lr)
                    head = nn.Linear((n_last_blocks + use_avgpool) * backbone.embed_dim, num_classes)
                    nn.init.normal_(head.weight, std=0.01)
                    nn.init.zeros_(head.bias)
                    self.heads[name] = head
                    self.head_inputs[name] = (n_last_blocks, use_avgpool)
                    self.head_learning_rates[name] = lr
        self.best_head: str | None = None

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.backbone.eval()  # always: frozen features, no drop path
        return self

    @torch.no_grad()
    def extract(self, images: Tensor) -> tuple[tuple[Tensor, Tensor], ...]:
        """``(patches [B, N, D], cls [B, D])`` of the last ``max(n_last_blocks_options)`` blocks."""
        n = max(self.hparams.n_last_blocks_options)
        return self.backbone.get_intermediate_layers(images, n, return_class_token=True, norm=True)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Logits ``[B, C]`` of every classifier of the grid."""
        blocks = self.extract(images)
        inputs = {key: create_linear_input(blocks, *key) for key in set(self.head_inputs.values())}
        # Classifiers in fp32 whatever the trainer's precision: DINOv2 autocasts the feature extraction only.
        with torch.autocast(images.device.type, enabled=False):
            return {name: head(inputs[self.head_inputs[name]]) for name, head in self.heads.items()}

    # ------------------------------------------------------------ optimisation
    def configure_callbacks(self) -> list[Callback]:
        return [ResumableTrainLoader()]  # exact resume, mid-epoch included, whatever the checkpoint callback

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        scale = batch_scaled_lr(self.trainer, 1.0, hp.lr_scaling_rule, "LinearProbe")
        groups = [
            {"params": list(head.parameters()), "head": name, "base_lr": self.head_learning_rates[name] * scale}
            for name, head in self.heads.items()
        ]
        return torch.optim.SGD(groups, lr=0.0, momentum=hp.momentum, weight_decay=0.0)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.lr_decay: np.ndarray = cosine_schedule(1.0, 0.0, int(self.trainer.estimated_stepping_batches))

    def on_train_batch_start(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        factor = value_at(self.lr_decay, self.global_step)
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self(batch["image"])
        losses = torch.stack([F.cross_entropy(head_logits, batch["label"]) for head_logits in logits.values()])
        self.log("train/loss_mean_over_heads", losses.mean(), prog_bar=True, batch_size=len(batch["label"]))
        return losses.sum()

    # -------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self.correct = torch.zeros(2, len(self.heads), device=self.device)  # top-1, top-5 per head
        self.num_queries = torch.zeros((), device=self.device)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        # Samples the DistributedSampler repeats are left out: each sample counts once.
        counted = counted_samples(self.trainer, batch_idx, len(batch["label"]), device=batch["label"].device)
        if not counted.any():
            return
        labels = batch["label"][counted]
        for index, head_logits in enumerate(self(batch["image"][counted]).values()):
            ranked = head_logits.topk(min(5, head_logits.shape[1]), dim=1).indices  # [B, 5]
            self.correct[0, index] += (ranked[:, 0] == labels).sum()
            self.correct[1, index] += (ranked == labels[:, None]).any(dim=1).sum()
        self.num_queries += len(labels)

    def on_validation_epoch_end(self) -> None:
        correct, total = self.correct, self.num_queries
        if self.trainer.world_size > 1:
            correct = self.trainer.strategy.reduce(correct, reduce_op="sum")
            total = self.trainer.strategy.reduce(total, reduce_op="sum")
        accuracy = 100 * correct / total.clamp(min=1)  # [2, H]
        names = list(self.heads)
        best = int(accuracy[0].argmax())
        self.best_head = names[best]
        metrics = {f"linear/{name}_top1": accuracy[0, i] for i, name in enumerate(names)}
        metrics |= {"linear/best_top1": accuracy[0, best], "linear/best_top5": accuracy[1, best]}
        self.log_dict(metrics)
        if not self.trainer.sanity_checking:
            rank_zero_info(f"linear probe: best classifier {self.best_head} (top-1 {accuracy[0, best]:.2f}%)")
