"""DINOv2 self-distillation (DINO [CLS] loss + iBOT masked-patch loss + KoLeo) as a LightningModule.

The recipe and its defaults are DINOv2's (Oquab et al., 2023; see configs/pretrain/dinov2.yaml).
A batch holds named crop groups, crop-major: ``global_crops [G, B, 3, H, W]``, ``local_crops
[L, B, 3, h, w]`` and the iBOT ``masks [G, B, N]`` of the student's global crops. The teacher is an
EMA of the student, sees the unmasked global crops only, and is what gets evaluated and exported.

Continued pretraining (docs/recipe.md#continued-pretraining): ``pretrained`` starts student and
teacher from a trained backbone, warm-started into the configured specialization (so the first step
computes what the vanilla model computes); heads come from the checkpoint when it has them, else
fresh, trained alone for ``head_warmup_epochs`` while the backbones stay frozen.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.strategies import FSDPStrategy
from torch import Tensor, nn

from clsvit_lightning.callbacks.resumable_loader import ResumableTrainLoader
from clsvit_lightning.data.transforms.tensors import normalize_on_device
from clsvit_lightning.distributed.fsdp import clip_grad_norm_ as fsdp_clip_grad_norm_
from clsvit_lightning.distributed.fsdp import sharded_parameter_ids
from clsvit_lightning.errors import check_option_values
from clsvit_lightning.losses import CenteringTargets, DINOLoss, KoLeoLoss, iBOTPatchLoss, sinkhorn_knopp
from clsvit_lightning.losses.ibot_patch_loss import masks_weight_from_masks
from clsvit_lightning.models.accounting import (
    count_flops_per_image,
    count_parameters,
    count_training_flops_per_image,
)
from clsvit_lightning.models.checkpoint_files import CheckpointReadError, read_checkpoint
from clsvit_lightning.models.compile import compile_blocks
from clsvit_lightning.models.dino_head import DINOHead
from clsvit_lightning.models.vision_transformer import VisionTransformer
from clsvit_lightning.tasks.common import (
    BackboneTask,
    batch_scaled_lr,
    check_finite_loss,
    load_backbone_weights,
    unwrapped_tensors,
)
from clsvit_lightning.tasks.continuation import check_head_warmup, freeze_during_head_warmup, load_heads
from clsvit_lightning.training.param_groups import build_param_groups
from clsvit_lightning.training.rng_state import restore_rng_states, save_rng_states
from clsvit_lightning.training.schedules import cosine_schedule, linear_warmup_then_constant, value_at


class DINOv2Pretraining(BackboneTask):
    """Student/teacher self-distillation; ``backbone`` is the student's (the teacher is a copy)."""

    # What the checkpoint's weights fix: refused if changed at resume (clsvit_lightning/lightning_cli.py).
    fixed_on_resume = frozenset({
        "num_prototypes", "head_hidden_dim", "head_bottleneck_dim", "separate_ibot_head", "ibot_num_prototypes",
        "ibot_head_hidden_dim", "ibot_head_bottleneck_dim", "teacher_targets",
    })  # fmt: skip

    def __init__(
        self,
        backbone: VisionTransformer,
        # Continued pretraining: a trained backbone to start from (any file `load_pretrained` reads).
        pretrained: str | None = None,
        # heads
        num_prototypes: int = 65536,
        head_hidden_dim: int = 2048,
        head_bottleneck_dim: int = 256,
        separate_ibot_head: bool = False,
        ibot_num_prototypes: int = 65536,
        # The separate iBOT head has its own sizes; DINOv2's vitl14 recipe widens only the DINO head's
        # bottleneck (384), the iBOT head keeps the defaults.
        ibot_head_hidden_dim: int = 2048,
        ibot_head_bottleneck_dim: int = 256,
        # losses
        dino_loss_weight: float = 1.0,
        ibot_loss_weight: float = 1.0,
        koleo_loss_weight: float = 0.1,
        teacher_targets: Literal["centering", "sinkhorn_knopp"] = "centering",
        center_momentum: float = 0.9,
        teacher_temperature: float = 0.07,
        warmup_teacher_temperature: float = 0.04,
        warmup_teacher_temperature_epochs: float = 30,
        # optimisation
        base_lr: float = 0.004,
        lr_scaling_rule: Literal["sqrt_wrt_1024", "linear_wrt_256", "none"] = "sqrt_wrt_1024",
        min_lr: float = 1e-6,
        warmup_epochs: float = 10,
        weight_decay: float = 0.04,
        weight_decay_end: float = 0.4,
        teacher_momentum: float = 0.992,
        teacher_momentum_end: float = 1.0,
        freeze_last_layer_epochs: float = 1,
        layerwise_decay: float = 0.9,
        patch_embed_lr_multiplier: float = 0.2,
        clip_grad: float | None = 3.0,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        # Continued pretraining: heads trained alone first (backbones frozen), the teacher's heads
        # following the student's at this momentum; then the schedules above start afresh.
        head_warmup_epochs: float = 0,
        head_warmup_teacher_momentum: float = 0.9,
        # speed
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        if teacher_targets not in ("centering", "sinkhorn_knopp"):
            raise ValueError(f"teacher_targets must be 'centering' or 'sinkhorn_knopp', got {teacher_targets!r}")
        check_option_values(
            "DINOv2Pretraining",
            self.hparams,
            positive=("base_lr", "teacher_temperature", "warmup_teacher_temperature"),
            non_negative=(
                *("dino_loss_weight", "ibot_loss_weight", "koleo_loss_weight"),
                *("min_lr", "weight_decay", "weight_decay_end", "head_warmup_epochs"),
            ),
            unit_interval=(
                *("teacher_momentum", "teacher_momentum_end", "center_momentum", "head_warmup_teacher_momentum"),
            ),
        )
        # Before the heads exist: a checkpoint that does not fit the backbone fails here, before any step.
        checkpoint = load_backbone_weights(backbone, pretrained, "DINOv2Pretraining", warn_if_random=False)

        def heads() -> nn.ModuleDict:
            dino = DINOHead(backbone.embed_dim, num_prototypes, head_hidden_dim, head_bottleneck_dim)
            modules = {"backbone": backbone, "dino_head": dino}
            if separate_ibot_head and ibot_loss_weight > 0:
                modules["ibot_head"] = DINOHead(
                    backbone.embed_dim, ibot_num_prototypes, ibot_head_hidden_dim, ibot_head_bottleneck_dim
                )
            return nn.ModuleDict(modules)

        self.student = heads()
        self.loaded_heads: list[str] = []  # the heads `pretrained` held (the others start fresh)
        if checkpoint is not None:
            student_heads = {name: head for name, head in self.student.items() if name != "backbone"}
            self.loaded_heads = load_heads(
                student_heads, checkpoint, str(pretrained), "DINOv2Pretraining", head_warmup_epochs
            )
        # The teacher starts as an exact copy; it never receives gradients and stays in eval mode
        # (no drop path). Lightning's EMAWeightAveraging keeps an average for evaluation only, while
        # this teacher takes part in every step with a scheduled momentum: hence the own EMA.
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.dino_loss = DINOLoss()
        self.ibot_loss = iBOTPatchLoss()
        self.koleo_loss = KoLeoLoss()
        if teacher_targets == "centering":
            self.dino_center = CenteringTargets(num_prototypes, center_momentum)
            self.ibot_center = CenteringTargets(self._ibot_head_size(), center_momentum)
            if checkpoint is not None:
                self._load_centers(checkpoint)
        self.schedules: dict[str, np.ndarray] = {}
        self.head_warmup_steps = 0  # set with the schedules
        self._ema_parts: list[str] | None = None  # the teacher parts averaged after a step (None: all)
        self._flops_by_phase: tuple[int, int] | None = None  # backbone FLOPs of a step: (full, head warm-up)

    def _load_centers(self, checkpoint: Mapping[str, object]) -> None:
        """Centering state of this project's checkpoints, for the heads that were loaded."""
        state = unwrapped_tensors(checkpoint)
        ibot_head = "ibot_head" if "ibot_head" in self.student else "dino_head"
        for name, head in (("dino_center", "dino_head"), ("ibot_center", ibot_head)):
            center, saved = getattr(self, name).center, state.get(f"{name}.center")
            if head in self.loaded_heads and saved is not None and saved.shape == center.shape:
                center.copy_(saved)

    def _ibot_head_size(self) -> int:
        separate = self.hparams.separate_ibot_head and self.hparams.ibot_loss_weight > 0
        return self.hparams.ibot_num_prototypes if separate else self.hparams.num_prototypes

    @property
    def teacher_backbone(self) -> VisionTransformer:
        """The backbone that gets evaluated and exported."""
        return self.teacher["backbone"]

    def configure_model(self) -> None:
        # Block by block and in place (see models/compile.py): checkpoint keys stay the eager ones.
        if self.hparams.compile:
            compile_blocks(self.student)
            compile_blocks(self.teacher)

    # ------------------------------------------------------------- schedules
    def setup(self, stage: str) -> None:
        if stage == "fit":
            self._build_schedules()

    def _build_schedules(self) -> None:
        trainer, hp = self.trainer, self.hparams
        total_steps = int(trainer.estimated_stepping_batches)
        # Epoch-denominated settings (warmups, freeze) need the optimizer steps of one epoch.
        if trainer.num_training_batches == float("inf"):  # not loaded yet when only max_steps is set
            trainer.fit_loop.setup_data()
        batches = trainer.num_training_batches
        if batches == float("inf"):
            raise ValueError(
                "DINOv2Pretraining: the train loader has no length, so warmup_epochs and the other "
                "epoch-based settings cannot be turned into steps; give the DataModule a sized dataset"
            )
        steps_per_epoch = max(1, math.ceil(int(batches) / trainer.accumulate_grad_batches))

        def steps(epochs: float) -> int:
            return min(total_steps, int(round(epochs * steps_per_epoch)))

        # The head warm-up comes first; the recipe's schedules then start afresh over the remaining steps.
        self.head_warmup_steps = head_steps = steps(hp.head_warmup_epochs)
        if head_steps:
            check_head_warmup(trainer, "DINOv2Pretraining", head_steps, total_steps)
        main_steps = total_steps - head_steps

        def main(epochs: float) -> int:
            return min(main_steps, int(round(epochs * steps_per_epoch)))

        lr = batch_scaled_lr(trainer, hp.base_lr, hp.lr_scaling_rule, "DINOv2Pretraining")
        lr_schedule = cosine_schedule(lr, hp.min_lr, main_steps, warmup_steps=main(hp.warmup_epochs))
        last_layer_lr = lr_schedule.copy()
        last_layer_lr[: main(hp.freeze_last_layer_epochs)] = 0.0
        recipe = {
            "lr": lr_schedule,
            "last_layer_lr": last_layer_lr,
            "weight_decay": cosine_schedule(hp.weight_decay, hp.weight_decay_end, main_steps),
            "teacher_momentum": cosine_schedule(hp.teacher_momentum, hp.teacher_momentum_end, main_steps),
            "teacher_temperature": linear_warmup_then_constant(
                hp.warmup_teacher_temperature,
                hp.teacher_temperature,
                main(hp.warmup_teacher_temperature_epochs),
                main_steps,
            ),
        }
        # During the head warm-up (our choice, not a published recipe's): the heads, prototypes included,
        # ramp up linearly to the peak lr as DINOv2's warmup does; weight decay and teacher temperature
        # hold their first recipe values; the teacher's heads follow the student's at
        # head_warmup_teacher_momentum (0.9 averages over ~10 steps) rather than the recipe's 0.99x, so
        # that the targets come from trained heads, not from random prototypes, when the backbone joins.
        head_phase = {name: np.full(head_steps, values[0]) for name, values in recipe.items()}
        head_phase["lr"] = head_phase["last_layer_lr"] = np.linspace(0.0, lr, head_steps)
        head_phase["teacher_momentum"] = np.full(head_steps, hp.head_warmup_teacher_momentum)
        self.schedules = {name: np.concatenate([head_phase[name], values]) for name, values in recipe.items()}

    def scheduled(self, name: str) -> float:
        return value_at(self.schedules[name], self.global_step)

    def _count_flops_per_batch(self, batch: dict[str, Tensor], backbone_frozen: bool = False) -> int:
        """Backbone FLOPs of a step: student forward + backward (~3x forward) and teacher forward.

        The student's blocks count only the samples their branches run on (batch-subset stochastic
        depth); the teacher runs everything. Heads and losses are left out;
        ``ImageThroughputMonitor`` turns this into FLOP/s and MFU. ``backbone_frozen`` (the head
        warm-up): no backward runs through the student's backbone, which costs its forward only.
        """
        student, teacher = self._backbone_forward_flops(batch)
        return int((1 if backbone_frozen else 3) * student + teacher)

    def _backbone_forward_flops(self, batch: dict[str, Tensor]) -> tuple[float, int]:
        """Forward FLOPs of the student's backbone (training mode: stochastic depth) and of the teacher's."""
        backbone = self.student["backbone"]
        # Each crop group goes through the student as one batch of views x images (training_step).
        global_count = batch["global_crops"].shape[0] * batch["global_crops"].shape[1]
        global_size = tuple(batch["global_crops"].shape[-2:])
        forward = count_flops_per_image(backbone, global_size)  # counted once for teacher and student
        teacher = global_count * forward
        student = global_count * count_training_flops_per_image(backbone, global_count, global_size, forward)
        local = batch.get("local_crops")
        if local is not None and local.shape[0] > 0:
            local_count = local.shape[0] * local.shape[1]
            student += local_count * count_training_flops_per_image(backbone, local_count, tuple(local.shape[-2:]))
        return student, teacher

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # All schedules of one optimizer step are read at the same global step (DINOv2's `it`).
        self._teacher_momentum = self.scheduled("teacher_momentum")
        if self.head_warmup_steps:
            freeze_during_head_warmup(self.student["backbone"], self.global_step, self.head_warmup_steps)
        frozen = self.global_step < self.head_warmup_steps
        if self._flops_by_phase is None:  # counted once, at the first batch's shapes
            student, teacher = self._backbone_forward_flops(batch)
            self._flops_by_phase = (int(3 * student + teacher), int(student + teacher))
        # ThroughputMonitor reads `flops_per_batch` again after every batch (on_train_batch_end; only its
        # presence is checked once) and sums the per-batch values of its window, so a value set here
        # for this batch's phase is what the step is counted at. Set here rather than computed from
        # global_step when read: at on_train_batch_end the step has already been incremented.
        full, head_warmup = self._flops_by_phase
        self.flops_per_batch = head_warmup if frozen else full
        self._ema_parts = [name for name in self.teacher if not (frozen and name == "backbone")]
        lr, last_layer_lr, weight_decay = (self.scheduled(n) for n in ("lr", "last_layer_lr", "weight_decay"))
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = (last_layer_lr if group["is_last_layer"] else lr) * group["lr_multiplier"]
            group["weight_decay"] = weight_decay * group["wd_multiplier"]

    def configure_callbacks(self) -> list[Callback]:
        return [ResumableTrainLoader()]  # exact resume, mid-epoch included, whatever the checkpoint callback

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = build_param_groups(
            {name: module for name, module in self.student.items()},
            layerwise_decay=self.hparams.layerwise_decay,
            patch_embed_lr_multiplier=self.hparams.patch_embed_lr_multiplier,
        )
        for group in groups:
            group.pop("names")
        # Fused: one kernel per parameter and no parameter-sized temporaries at the step (the
        # default foreach AdamW allocates them: the peak of a checkpointed step is the optimizer's).
        return torch.optim.AdamW(groups, lr=0.0, betas=tuple(self.hparams.adamw_betas), fused=True)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:  # noqa: ANN001
        # DINOv2 clips each student submodule (backbone, heads) separately, to norm 3.0.
        if not self.hparams.clip_grad:
            return
        # Under FSDP a rank holds shards of some gradients: their norms must be summed over ranks.
        trainer = self._trainer  # None when the step is driven by hand (benchmarks)
        fsdp = trainer is not None and isinstance(trainer.strategy, FSDPStrategy)
        sharded = sharded_parameter_ids(trainer.model) if fsdp else ()
        for module in self.student.values():
            if sharded:
                fsdp_clip_grad_norm_(module.parameters(), self.hparams.clip_grad, sharded)
            else:
                nn.utils.clip_grad_norm_(module.parameters(), self.hparams.clip_grad)

    # --------------------------------------------------------------- the step
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Loaders may ship uint8 crops (ImageNetDataModule(normalize_on_device=True)): normalise here.
        return normalize_on_device(batch) if isinstance(batch, dict) else batch

    def train(self, mode: bool = True) -> DINOv2Pretraining:
        super().train(mode)
        self.teacher.eval()  # always: no drop path, and the teacher is evaluated as is
        return self

    @torch.no_grad()
    def get_teacher_output(self, global_crops: Tensor, masks: Tensor, temperature: float) -> dict[str, Tensor]:
        """Targets: teacher [CLS] probabilities ``[G, B, K]`` and masked-patch probabilities ``[M, K]``."""
        num_views, batch = global_crops.shape[:2]
        out = self.teacher["backbone"].forward_features(global_crops.flatten(0, 1))  # [G*B, ...]
        cls_logits = self.teacher["dino_head"](out["x_norm_clstoken"])  # [G*B, K]
        targets = {"cls": self._teacher_probs(cls_logits, temperature, "dino").unflatten(0, (num_views, batch))}
        if self.hparams.ibot_loss_weight > 0:
            masked_patches = out["x_norm_patchtokens"][masks.flatten(0, 1)]  # [M, D]
            head = self.teacher["ibot_head"] if "ibot_head" in self.teacher else self.teacher["dino_head"]
            targets["patches"] = self._teacher_probs(head(masked_patches), temperature, "ibot")
        return targets

    def _teacher_probs(self, logits: Tensor, temperature: float, loss: str) -> Tensor:
        if self.hparams.teacher_targets == "sinkhorn_knopp":
            num_samples = None
            if loss == "ibot":  # the number of masked patches differs between ranks
                num_samples = self._all_reduce_sum(torch.tensor(float(logits.shape[0]), device=logits.device))
            return sinkhorn_knopp(logits, temperature, iterations=3, num_samples=num_samples)
        center = self.dino_center if loss == "dino" else self.ibot_center
        return center(logits, temperature)

    def _all_reduce_sum(self, value: Tensor) -> Tensor:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(value)
        return value

    def get_student_output(self, global_crops: Tensor, local_crops: Tensor | None, masks: Tensor) -> dict[str, Tensor]:
        """Student [CLS] logits ``[G + L, B, K]``, global [CLS] features ``[G, B, D]``, masked-patch logits."""
        num_views, batch = global_crops.shape[:2]
        out = self.student["backbone"].forward_features(global_crops.flatten(0, 1), masks=masks.flatten(0, 1))
        cls_tokens = [out["x_norm_clstoken"]]  # [G*B, D]
        if local_crops is not None and local_crops.shape[0] > 0:
            local = self.student["backbone"].forward_features(local_crops.flatten(0, 1))
            cls_tokens.append(local["x_norm_clstoken"])  # [L*B, D]
        cls_tokens = torch.cat(cls_tokens)
        masked_patches = out["x_norm_patchtokens"][masks.flatten(0, 1)]  # [M, D]
        if self.hparams.ibot_loss_weight > 0 and "ibot_head" not in self.student:
            # Shared head: one call over [CLS] rows and masked-patch rows.
            logits = self.student["dino_head"](torch.cat([cls_tokens, masked_patches]))
            cls_logits, patch_logits = logits[: len(cls_tokens)], logits[len(cls_tokens) :]
        else:
            cls_logits = self.student["dino_head"](cls_tokens)
            patch_logits = self.student["ibot_head"](masked_patches) if "ibot_head" in self.student else None
        result = {
            "cls_logits": cls_logits.unflatten(0, (-1, batch)),  # [G + L, B, K]
            "global_cls": out["x_norm_clstoken"].unflatten(0, (num_views, batch)),  # [G, B, D]
        }
        if patch_logits is not None:
            result["patch_logits"] = patch_logits
        return result

    def compute_losses(
        self, student: dict[str, Tensor], teacher: dict[str, Tensor], masks: Tensor
    ) -> dict[str, Tensor]:
        hp = self.hparams
        losses = {"dino": self.dino_loss(student["cls_logits"], teacher["cls"])}
        koleo_sum = 0.0
        if hp.koleo_loss_weight > 0:
            # One KoLeo per global crop, so two crops of one image are never each other's neighbour.
            koleo_per_crop = torch.stack([self.koleo_loss(crop) for crop in student["global_cls"]])  # [G]
            koleo_sum = koleo_per_crop.sum()
            losses["koleo"] = koleo_per_crop.mean()  # logged per crop
        if hp.ibot_loss_weight > 0:
            flat_masks = masks.flatten(0, 1)  # [G*B, N]
            losses["ibot"] = self.ibot_loss(
                student["patch_logits"], teacher["patches"], masks_weight_from_masks(flat_masks), len(flat_masks)
            )
        # DINOv2 sums KoLeo over the global crops: koleo_loss_weight (0.1) for each crop.
        losses["total"] = (
            hp.dino_loss_weight * losses["dino"]
            + hp.ibot_loss_weight * losses.get("ibot", 0.0)
            + hp.koleo_loss_weight * koleo_sum
        )
        return losses

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        global_crops, masks = batch["global_crops"], batch["masks"]
        temperature = self.scheduled("teacher_temperature")
        teacher = self.get_teacher_output(global_crops, masks, temperature)
        student = self.get_student_output(global_crops, batch.get("local_crops"), masks)
        losses = self.compute_losses(student, teacher, masks)
        check_finite_loss(losses["total"], self.global_step, losses)
        batch_size = global_crops.shape[1]
        self.log_dict({f"train/loss_{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=batch_size)
        self.log_dict({f"train/{name}": self.scheduled(name) for name in self.schedules}, batch_size=batch_size)
        return losses["total"]

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # After each real optimizer step (not after every micro-batch under gradient accumulation).
        # A frozen backbone is left out: the student's equals the teacher's until the warm-up ends.
        self.update_teacher(self._teacher_momentum, self._ema_parts)

    @torch.no_grad()
    def update_teacher(self, momentum: float, parts: Iterable[str] | None = None) -> None:
        """``teacher = momentum * teacher + (1 - momentum) * student``, per parameter of ``parts`` (default: all)."""
        names = list(self.teacher) if parts is None else list(parts)
        teacher_params = [p for name in names for p in self.teacher[name].parameters()]
        student_params = [p.detach() for name in names for p in self.student[name].parameters()]
        torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)

    def on_fit_start(self) -> None:
        count = count_parameters(self.student["backbone"])
        summary = {
            "backbone/params_total": float(count.total),
            "backbone/params_overhead": count.overhead,
            "backbone/gflops_per_image": count_flops_per_image(self.student["backbone"]) / 1e9,
        }
        for logger in self.loggers:
            logger.log_metrics(summary, step=0)

    # -------------------------------------------------------- checkpointing
    def checkpointed_backbone(self) -> VisionTransformer:
        return self.student["backbone"]  # the teacher's is the same architecture

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # the backbone's config
        save_rng_states(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_rng_states(checkpoint)


def export_teacher_backbone(checkpoint_path: str, output_path: str) -> dict[str, Any]:
    """Write the teacher backbone of a pretraining checkpoint in the format ``load_pretrained`` reads."""
    checkpoint = read_checkpoint(checkpoint_path)
    state = checkpoint["state_dict"] if isinstance(checkpoint.get("state_dict"), Mapping) else checkpoint
    prefix = "teacher.backbone."
    backbone = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not backbone:
        raise CheckpointReadError(
            f"{checkpoint_path} holds no {prefix}* weights; expected a DINOv2Pretraining checkpoint"
        )
    config = checkpoint.get("backbone_config", {})
    torch.save({"model": backbone, "backbone_config": config}, output_path)
    return {"keys": len(backbone), "params": int(sum(v.numel() for v in backbone.values())), "config": config}
