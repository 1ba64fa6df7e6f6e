"""Supervised ViT pretraining with the DeiT III recipe (Touvron et al. 2022, "DeiT III: Revenge of the ViT").

The paper's second framework (Marouani et al., ICLR 2026, arXiv 2602.08626): layer specialization also
helps supervised training.
The recipe, defaults in ``configs/supervised/deit3_base.yaml``:

* data: 3-Augment (one of grayscale / solarize / Gaussian blur, colour jitter 0.3) after a random
  resized crop and flip: ``ImageNetDataModule(mode="supervised")`` builds it;
* targets: one-hot labels mixed by mixup (alpha 0.8) or cutmix (alpha 1.0), then binarised
  (``y > 0`` -> 1: both mixed classes are positives, DeiT III's ``--bce-loss``);
* loss: binary cross-entropy on the logits ``z = W * LN(x_cls) + b`` of a linear head on the normed
  [CLS]: ``mean_{b,c} [-y log sigmoid(z) - (1 - y) log(1 - sigmoid(z))]``;
* backbone: the same specializable ``VisionTransformer`` with LayerScale and stochastic depth;
* optimisation: LAMB (or AdamW), lr 3e-3 for a global batch of 2048, weight decay 0.05, 5 linear
  warmup epochs from 1e-6 then a cosine to 1e-5, all precomputed per step.

``pretrained`` continues a trained model (docs/recipe.md#continued-pretraining): the backbone
warm-started into the configured specialization, the classifier loaded when the file has one,
else trained alone for ``head_warmup_epochs`` first (the backbone frozen).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from clsvit_lightning.callbacks.resumable_loader import ResumableTrainLoader
from clsvit_lightning.data.transforms.mixup import MixupCutmix, one_hot_targets
from clsvit_lightning.errors import check_option_values
from clsvit_lightning.models.accounting import count_flops_per_image, count_parameters
from clsvit_lightning.models.vision_transformer import VisionTransformer
from clsvit_lightning.tasks.common import (
    BackboneTask,
    batch_scaled_lr,
    check_finite_loss,
    counted_samples,
    load_backbone_weights,
)
from clsvit_lightning.tasks.continuation import check_head_warmup, freeze_during_head_warmup, load_heads
from clsvit_lightning.training.lamb import Lamb
from clsvit_lightning.training.param_groups import build_param_groups
from clsvit_lightning.training.rng_state import restore_rng_states, save_rng_states
from clsvit_lightning.training.schedules import cosine_schedule, value_at


class DeiT3Supervised(BackboneTask):
    """A linear classifier on the normed [CLS] of ``backbone``, both trained on labelled images."""

    # What the checkpoint's weights fix: refused if changed at resume (clsvit_lightning/lightning_cli.py).
    fixed_on_resume = frozenset({"num_classes", "optimizer"})

    def __init__(
        self,
        backbone: VisionTransformer,
        pretrained: str | None = None,
        num_classes: int = 1000,
        # targets
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        mix_probability: float = 1.0,
        mix_switch_probability: float = 0.5,
        bce_target_threshold: float | None = 0.0,
        # optimisation
        optimizer: Literal["lamb", "adamw"] = "lamb",
        base_lr: float = 3e-3,
        lr_scaling_rule: Literal["linear_wrt_256", "sqrt_wrt_1024", "none"] = "none",
        min_lr: float = 1e-5,
        warmup_lr: float = 1e-6,
        warmup_epochs: float = 5,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        clip_grad: float | None = 1.0,
        head_warmup_epochs: float = 0,
    ) -> None:
        """
        Args:
            backbone: the ViT to train (its drop_path_rate and layerscale_init are the recipe's).
            pretrained: a trained model to continue (any file ``load_pretrained`` reads); its classifier
                ``head.*`` is loaded when present and of ``num_classes`` outputs (an error otherwise).
            num_classes: classifier outputs; must match the datamodule's ``num_classes`` when it has one.
            mixup_alpha: Beta(a, a) of mixup; 0 disables mixup.
            cutmix_alpha: Beta(a, a) of cutmix; 0 disables cutmix.
            mix_probability: probability that a batch is mixed at all.
            mix_switch_probability: probability of cutmix rather than mixup when both are on.
            bce_target_threshold: mixed targets above it become 1 (DeiT III: 0.0); None keeps soft targets.
            optimizer: ``lamb`` (DeiT III) or ``adamw``.
            base_lr: peak lr, for the global batch when ``lr_scaling_rule`` is ``none`` (DeiT III's ``--unscale-lr``).
            lr_scaling_rule: how ``base_lr`` scales with the global batch size.
            min_lr: lr at the end of the cosine decay.
            warmup_lr: lr at the first warmup step.
            warmup_epochs: linear warmup length.
            weight_decay: decoupled weight decay; none on norm parameters, biases and LayerScale, while
                the [CLS], register and position embeddings are decayed (``build_param_groups``).
            betas: Adam/LAMB moment coefficients.
            eps: Adam/LAMB epsilon.
            clip_grad: global gradient-norm clip; 1.0 is what apex's FusedLAMB (DeiT III) applies internally.
            head_warmup_epochs: epochs at the start in which only the classifier trains (the backbone gets
                no gradient), its lr ramping from ``warmup_lr`` to the peak; the recipe's schedule then
                starts afresh. For a fresh classifier on a pretrained backbone (our choice, in the spirit of
                linear-probe-then-finetune; DeiT III itself has no such phase).
        """
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        if optimizer not in ("lamb", "adamw"):
            raise ValueError(f"optimizer must be 'lamb' or 'adamw', got {optimizer!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        check_option_values(
            "DeiT3Supervised",
            self.hparams,
            positive=("base_lr",),
            non_negative=("min_lr", "warmup_lr", "weight_decay", "head_warmup_epochs"),
        )
        checkpoint = load_backbone_weights(backbone, pretrained, "DeiT3Supervised", warn_if_random=False)
        self.backbone = backbone
        self.head = nn.Linear(backbone.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)  # DeiT III's init of linear layers
        nn.init.zeros_(self.head.bias)
        if checkpoint is not None:
            load_heads({"head": self.head}, checkpoint, str(pretrained), "DeiT3Supervised", head_warmup_epochs)
        self.head_warmup_steps = 0  # set with the schedules
        self._flops_by_phase: tuple[int, int] | None = None  # backbone FLOPs of a step: (full, head warm-up)
        self.mixer = MixupCutmix(num_classes, mixup_alpha, cutmix_alpha, mix_probability, mix_switch_probability)
        top_k = min(5, num_classes)
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top_k, average="micro")
        self.schedules: dict[str, np.ndarray] = {}

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``[B, C]``."""
        return self.head(self.backbone(images))

    # ------------------------------------------------------------- schedules
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        data_classes = getattr(datamodule, "num_classes", None)
        if data_classes is not None and int(data_classes) != self.hparams.num_classes:
            raise ValueError(
                f"model num_classes={self.hparams.num_classes} but the datamodule has {data_classes} classes: "
                f"set --model.init_args.num_classes {data_classes}"
            )
        if stage == "fit":
            self._build_schedules()

    def _build_schedules(self) -> None:
        trainer, hp = self.trainer, self.hparams
        total_steps = int(trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total_steps // max(1, trainer.max_epochs or 1))
        if trainer.max_epochs in (None, -1):
            if trainer.num_training_batches == float("inf"):  # not loaded yet when only max_steps is set
                trainer.fit_loop.setup_data()
            steps_per_epoch = max(1, math.ceil(int(trainer.num_training_batches) / trainer.accumulate_grad_batches))
        # A head warm-up comes first (classifier alone); the recipe's schedule then starts afresh.
        self.head_warmup_steps = head_steps = min(total_steps, int(round(hp.head_warmup_epochs * steps_per_epoch)))
        if head_steps:
            check_head_warmup(trainer, "DeiT3Supervised", head_steps, total_steps)
        main_steps = total_steps - head_steps
        warmup_steps = min(main_steps, int(round(hp.warmup_epochs * steps_per_epoch)))
        lr = batch_scaled_lr(trainer, hp.base_lr, hp.lr_scaling_rule, "DeiT3Supervised")
        main_lr = cosine_schedule(lr, hp.min_lr, main_steps, warmup_steps, start_warmup_value=hp.warmup_lr)
        self.schedules = {
            "lr": np.concatenate([np.linspace(hp.warmup_lr, lr, head_steps), main_lr]),
            "weight_decay": np.full(total_steps, hp.weight_decay),  # constant in DeiT III
        }

    def scheduled(self, name: str) -> float:
        return value_at(self.schedules[name], self.global_step)

    def on_train_batch_start(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self.head_warmup_steps:
            freeze_during_head_warmup(self.backbone, self.global_step, self.head_warmup_steps)
        if self._flops_by_phase is None:  # backbone only, counted once at the first batch's shapes
            images = batch["image"]
            forward = len(images) * count_flops_per_image(self.backbone, tuple(images.shape[-2:]))
            self._flops_by_phase = (3 * forward, forward)  # forward + backward ~ 3x forward; forward alone
        # During the head warm-up no backward runs through the frozen backbone: its forward only.
        # ThroughputMonitor reads `flops_per_batch` after every batch (on_train_batch_end), so the value
        # set here for this step's phase is the one counted (global_step has moved on by then).
        full, head_warmup = self._flops_by_phase
        self.flops_per_batch = head_warmup if self.global_step < self.head_warmup_steps else full
        lr, weight_decay = self.scheduled("lr"), self.scheduled("weight_decay")
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = lr * group["lr_multiplier"]
            group["weight_decay"] = weight_decay * group["wd_multiplier"]

    def configure_callbacks(self) -> list[Callback]:
        return [ResumableTrainLoader()]  # exact resume, mid-epoch included, whatever the checkpoint callback

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = build_param_groups({"backbone": self.backbone, "head": self.head})
        for group in groups:
            group.pop("names")
        betas, eps = tuple(self.hparams.betas), self.hparams.eps
        if self.hparams.optimizer == "lamb":
            return Lamb(groups, lr=0.0, betas=betas, eps=eps)
        return torch.optim.AdamW(groups, lr=0.0, betas=betas, eps=eps)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:  # noqa: ANN001
        if self.hparams.clip_grad:
            nn.utils.clip_grad_norm_(self.parameters(), self.hparams.clip_grad)

    # --------------------------------------------------------------- the step
    def training_targets(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Mixed images and the BCE targets ``[B, C]`` (binarised above ``bce_target_threshold``)."""
        images, targets = self.mixer(images, labels)
        threshold = self.hparams.bce_target_threshold
        if threshold is not None:
            targets = (targets > threshold).to(targets.dtype)
        return images, targets

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images, targets = self.training_targets(batch["image"], batch["label"])
        logits = self(images)
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float())
        check_finite_loss(loss, self.global_step)
        batch_size = len(images)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log_dict({f"train/{name}": self.scheduled(name) for name in self.schedules}, batch_size=batch_size)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        # Samples the DistributedSampler repeats are left out: each sample counts once.
        counted = counted_samples(self.trainer, batch_idx, len(batch["label"]), device=batch["label"].device)
        if not counted.any():
            return
        images, labels = batch["image"][counted], batch["label"][counted]
        logits = self(images).float()
        targets = one_hot_targets(labels, self.hparams.num_classes)
        batch_size = len(images)
        self.log("val/loss", F.binary_cross_entropy_with_logits(logits, targets), sync_dist=True, batch_size=batch_size)
        self.val_top1(logits, labels)
        self.val_top5(logits, labels)
        self.log("val/top1", self.val_top1, prog_bar=True, batch_size=batch_size)
        self.log("val/top5", self.val_top5, batch_size=batch_size)

    def on_fit_start(self) -> None:
        count = count_parameters(self.backbone)
        summary = {
            "backbone/params_total": float(count.total),
            "backbone/params_overhead": count.overhead,
            "backbone/gflops_per_image": count_flops_per_image(self.backbone) / 1e9,
        }
        for logger in self.loggers:
            logger.log_metrics(summary, step=0)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # the backbone's config
        # Mixup/cutmix draw from the global RNGs: checkpoints carry them, as in the self-distillation task.
        save_rng_states(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_rng_states(checkpoint)
