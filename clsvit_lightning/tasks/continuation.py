"""What a run continued from a trained model needs beyond the backbone: its heads, and a head warm-up.

``DINOv2Pretraining`` and ``DeiT3Supervised`` take ``pretrained``: the backbone comes through
``load_backbone_weights`` (warm-started into the configured specialization, so the first step
computes the vanilla function), the heads from the same file where it has them
(:func:`checkpoint_heads`), else fresh. Fresh heads are trained alone first, for
``head_warmup_epochs``, while the backbone gets no gradient (:func:`freeze_during_head_warmup`), so
that random prototypes or a random classifier do not pull the pretrained features while they are
random. See docs/recipe.md#continued-pretraining.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lightning.pytorch import Trainer
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.checkpoint import CheckpointMismatchError
from clsvit_lightning.models.vision_transformer import VisionTransformer
from clsvit_lightning.tasks.common import unwrapped_tensors


def checkpoint_heads(checkpoint: Mapping[str, object], names: Iterable[str]) -> dict[str, dict[str, Tensor]]:
    """The state of each head of ``names`` that ``checkpoint`` holds (the teacher's where there are two).

    This project's checkpoints keep them in ``state_dict`` (``teacher.dino_head.*`` for pretraining,
    ``head.*`` for DeiT III); DINOv2's training checkpoints (``teacher_checkpoint.pth``) as
    ``dino_head.*`` under ``teacher``; DeiT III's and timm's files as ``head.*``. Released DINOv2
    backbones and ``clsvit export`` files hold none.
    """
    state = unwrapped_tensors(checkpoint)
    prefix = "teacher." if any(key.startswith("teacher.") for key in state) else ""
    heads = {}
    for name in names:
        start = f"{prefix}{name}."
        head = {key.removeprefix(start): value for key, value in state.items() if key.startswith(start)}
        if head:
            heads[name] = head
    return heads


def load_heads(
    heads: Mapping[str, nn.Module], checkpoint: Mapping[str, object], source: str, owner: str, warmup_epochs: float
) -> list[str]:
    """Load each head of ``heads`` that ``checkpoint`` holds; the names of those loaded.

    A head whose shapes differ from the configured one is an error (before any step) rather than
    a silent fresh start. Fresh heads without a warm-up get a warning.
    """
    found = checkpoint_heads(checkpoint, heads)
    loaded = []
    for name, head in heads.items():
        if name not in found:
            continue
        expected = {key: tuple(value.shape) for key, value in head.state_dict().items()}
        given = {key: tuple(value.shape) for key, value in found[name].items()}
        if given != expected:
            differences = [
                f"{key}: checkpoint {given.get(key)} vs model {shape}"
                for key, shape in expected.items()
                if given.get(key) != shape
            ]
            differences += [f"{key}: not in the model" for key in given if key not in expected]
            raise CheckpointMismatchError(
                f"{owner}: the {name} of {source} does not fit the configured one ({'; '.join(differences[:6])}); "
                "configure the head as the checkpoint's, or start from its backbone alone (`clsvit export`) with "
                "a fresh head"
            )
        head.load_state_dict(found[name])
        loaded.append(name)
    fresh = [name for name in heads if name not in loaded]
    rank_zero_info(f"{owner}: heads from {source}: {', '.join(loaded) or 'none'}; fresh: {', '.join(fresh) or 'none'}")
    if fresh and not warmup_epochs:
        rank_zero_warn(
            f"{owner}: {', '.join(fresh)} start from random weights and head_warmup_epochs is 0, so random heads "
            "drive the pretrained backbone from the first step; set head_warmup_epochs "
            "(configs/pretrain/continue.yaml: 1)"
        )
    return loaded


def freeze_during_head_warmup(backbone: VisionTransformer, step: int, head_warmup_steps: int) -> None:
    """No gradient for ``backbone`` before ``head_warmup_steps``: the optimizer skips its parameters
    (no update, no weight decay, no moments), and the backward pass stops at the heads."""
    backbone.requires_grad_(step >= head_warmup_steps)


def check_head_warmup(trainer: Trainer, owner: str, head_steps: int, total_steps: int) -> None:
    """The warm-up must leave steps for the backbone; DDP must expect unused parameters; FSDP cannot freeze."""
    if head_steps >= total_steps:
        raise ConfigError(
            f"{owner}: the head warm-up ({head_steps} steps) leaves none of the run's {total_steps} steps for the "
            "backbone; lower head_warmup_epochs or lengthen the run"
        )
    strategy = trainer.strategy
    if isinstance(strategy, FSDPStrategy):
        raise ConfigError(
            f"{owner}: the head warm-up freezes the backbone for some steps, which FSDP's flat parameters do not "
            "support; use --trainer.strategy ddp_find_unused_parameters_true, or head_warmup_epochs 0"
        )
    if isinstance(strategy, DDPStrategy) and not getattr(strategy, "_ddp_kwargs", {}).get("find_unused_parameters"):
        raise ConfigError(
            f"{owner}: the head warm-up freezes the backbone for some steps, so DDP must expect parameters without "
            "gradients: use --trainer.strategy ddp_find_unused_parameters_true (or head_warmup_epochs 0)"
        )
