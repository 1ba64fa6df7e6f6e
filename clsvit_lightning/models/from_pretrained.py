"""``from_pretrained(path)``: the backbone of any file or folder, built and loaded, without Lightning.

Where ``load_pretrained`` fills a model you built, this builds it too: the architecture and the
specialization come from the source (see ``formats/sources.py`` for what each kind of source
holds), the weights go through ``load_pretrained`` (so foreign layouts, resized position
embeddings and warm starts behave the same), and the model comes back in eval mode.
"""

from __future__ import annotations

import os
from typing import Any

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models.checkpoint import LoadReport, load_pretrained
from clsvit_lightning.models.formats.sources import infer_backbone_config, read_backbone
from clsvit_lightning.models.vision_transformer import VisionTransformer


def from_pretrained(path: str | os.PathLike, which: str | None = None, **overrides: Any) -> VisionTransformer:
    """The ``VisionTransformer`` stored at ``path``, in eval mode.

    Args:
        path: a ``clsvit export`` file, any task's Lightning checkpoint, a run folder (its newest
            checkpoint), a Hugging Face DINOv2 folder, a ``.safetensors`` file, or a DINOv2/timm
            state dict (which does not state its architecture: it is read from the shapes).
        which: ``"teacher"`` (default where there are two) or ``"student"`` of a pretraining checkpoint.
        **overrides: ``VisionTransformer`` arguments replacing the stored ones. ``specialization=
            "paper"`` on vanilla weights warm-starts a specialized model that computes exactly the
            vanilla function; ``num_heads=`` where a file without architecture has unusual heads.

    The :class:`~clsvit_lightning.models.checkpoint.LoadReport` is kept as ``model.load_report``.
    """
    source = read_backbone(path, which)
    config = source.config if source.config is not None else infer_backbone_config(source.state, source.path, overrides)
    config = {**config, **overrides}
    try:
        model = VisionTransformer(**config)
    except TypeError as error:  # a configuration written by another version of the package
        raise ConfigError(
            f"{source.path}: its backbone configuration does not fit VisionTransformer ({error})"
        ) from None
    report: LoadReport = load_pretrained(model, source.state, source=source.path)
    report.dropped = sorted(set(report.dropped) | set(source.dropped))
    model.load_report = report
    return model.eval()
