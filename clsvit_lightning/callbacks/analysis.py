"""Run the token-interaction analysis every N epochs on a fixed batch of images during training.

In a config::

    trainer:
      callbacks:
        - class_path: clsvit_lightning.callbacks.TokenAnalysisCallback
          init_args: {data: /datasets/imagenet/val, num_images: 8, img_size: 224, every_n_epochs: 10}

Each run writes ``analysis.json`` and the PNGs to ``<out_dir>/epoch_<NNN>/``, logs the scalar
summary to every logger and the figures to W&B. The backbone is found on the LightningModule by
attribute name (``teacher_backbone`` first: in self-distillation the teacher is what gets evaluated).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
from torch import Tensor, nn

from clsvit_lightning.analysis import analyze_and_save, load_images
from clsvit_lightning.callbacks.slurm_requeue import stopping_for_requeue


def find_backbone(module: nn.Module, names: Sequence[str]) -> nn.Module:
    """The first attribute of ``module`` among ``names`` (dotted paths allowed: ``teacher.backbone``)."""
    for name in names:
        found: object = module
        for part in name.split("."):
            found = getattr(found, part, None)
        if isinstance(found, nn.Module) and hasattr(found, "blocks") and hasattr(found, "prepare_tokens"):
            return found
    children = sorted(name for name, _ in module.named_children())
    raise AttributeError(
        f"TokenAnalysisCallback(backbone_attr={list(names)}): none of these is a ViT backbone attribute of "
        f"{type(module).__name__}; its submodules are {children}"
    )


class TokenAnalysisCallback(pl.Callback):
    """Analyse the backbone every ``every_n_epochs`` training epochs (and at fit start if ``on_fit_start``).

    ``backbone_attr``: attribute name(s) of the backbone on the LightningModule, tried in order
    (default ``["teacher_backbone", "backbone"]``). Images: ``data`` (a folder, read once: the
    first ``num_images`` images sorted by path, resized and centre-cropped to ``img_size``) or
    ``images`` (a normalised ``[B, 3, H, W]`` tensor), so every run measures the same batch and
    runs compare across epochs. ``out_dir`` defaults to ``<trainer.log_dir or default_root_dir>/analysis``.
    Runs on global rank 0 only (the backbone is replicated; no collective is involved).
    """

    def __init__(
        self,
        data: str | None = None,
        images: Tensor | None = None,
        every_n_epochs: int = 1,
        on_fit_start: bool = False,
        backbone_attr: str | list[str] | None = None,
        num_images: int = 8,
        img_size: int = 224,
        out_dir: str | None = None,
        attention_blocks: list[int] | None = None,
        top_channels: int = 8,
        outlier_ratio: float = 3.0,
        log_prefix: str = "analysis",
    ) -> None:
        super().__init__()
        if (data is None) == (images is None):
            raise ValueError("TokenAnalysisCallback: give exactly one of `data` (an image folder) or `images`")
        if every_n_epochs < 1:
            raise ValueError(f"TokenAnalysisCallback: every_n_epochs must be >= 1, got {every_n_epochs}")
        self.data = data
        self.images = images
        self.every_n_epochs = every_n_epochs
        self.run_on_fit_start = on_fit_start
        # The teacher first: in self-distillation it is the model that gets evaluated.
        self.backbone_attr = (
            ["teacher_backbone", "backbone"] if backbone_attr is None
            else [backbone_attr] if isinstance(backbone_attr, str) else list(backbone_attr)
        )  # fmt: skip
        self.num_images = num_images
        self.img_size = img_size
        self.out_dir = out_dir
        self.attention_blocks = attention_blocks
        self.top_channels = top_channels
        self.outlier_ratio = outlier_ratio
        self.log_prefix = log_prefix
        self.last_report: dict | None = None
        self.last_files: dict[str, Path] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        find_backbone(pl_module, self.backbone_attr)  # fail now, not after the first epoch
        if self.run_on_fit_start:
            self.run(trainer, pl_module, tag="start")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Stopped mid-epoch for a SLURM requeue: the restart ends this epoch and analyses it then.
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0 and not stopping_for_requeue(trainer):
            self.run(trainer, pl_module, tag=f"epoch_{trainer.current_epoch:03d}")

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, tag: str) -> None:
        """One analysis, written to ``<out_dir>/<tag>/`` and logged at the current global step."""
        # Before the rank check: `trainer.log_dir` broadcasts, so every rank must ask for it.
        root = Path(self.out_dir) if self.out_dir else Path(trainer.log_dir or trainer.default_root_dir) / "analysis"
        if not trainer.is_global_zero:
            return
        backbone = find_backbone(pl_module, self.backbone_attr)
        if self.images is None:
            self.images, _ = load_images(self.data, self.img_size, backbone.patch_size, self.num_images)
        analysis, self.last_files = analyze_and_save(
            backbone,
            self.images,
            root / tag,
            attention_blocks=self.attention_blocks,
            top_channels=self.top_channels,
            outlier_ratio=self.outlier_ratio,
            loggers=trainer.loggers,
            step=trainer.global_step,
            log_prefix=self.log_prefix,
        )
        self.last_report = analysis.report
