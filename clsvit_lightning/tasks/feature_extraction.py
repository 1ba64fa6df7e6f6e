"""Feature extraction of any backbone checkpoint under ``clsvit predict`` (batched, DDP-sharded).

``predict_step`` returns, per image, the final-norm [CLS] token, the register tokens, the mean of
the normed patch tokens and (``patch_tokens=True``) every patch token; the
:class:`~clsvit_lightning.callbacks.feature_writer.FeatureWriter` callback writes them as ``.npy``
arrays in dataset order, with the file names beside them.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from clsvit_lightning.data.transforms.tensors import normalize_on_device
from clsvit_lightning.models.vision_transformer import VisionTransformer
from clsvit_lightning.tasks.common import BackboneTask, freeze


class FeatureExtraction(BackboneTask):
    """A frozen backbone in eval mode whose ``predict_step`` returns its features.

    Args:
        backbone: the architecture of the checkpoint (size, patch, registers, specialization).
        pretrained: the weights: any file ``load_pretrained`` reads (DINOv2/timm/DeiT III files, this
            project's Lightning checkpoints or ``clsvit export`` files). Required: the features of a
            random backbone are of no use.
        patch_tokens: also return every normed patch token ``[N, D]`` per image (large: N x D floats).
    """

    def __init__(self, backbone: VisionTransformer, pretrained: str, patch_tokens: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        if not pretrained:
            raise ValueError("FeatureExtraction: model.init_args.pretrained is required (a checkpoint or weights file)")
        self.backbone = freeze(backbone, pretrained, "FeatureExtraction")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return normalize_on_device(batch)  # loaders ship uint8 images

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        out = self.backbone.forward_features(batch["image"])
        patches = out["x_norm_patchtokens"].float()  # [B, N, D]
        features = {
            "index": batch["index"],  # [B]: the rows these features go to
            "cls": out["x_norm_clstoken"].float(),  # [B, D]
            "registers": out["x_norm_regtokens"].float(),  # [B, R, D]
            "patch_mean": patches.mean(dim=1),  # [B, D]
        }
        if self.hparams.patch_tokens:
            features["patches"] = patches
        return features
