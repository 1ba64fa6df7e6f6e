"""Any folder of images (searched recursively) for ``clsvit predict``: features, not labels."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from clsvit_lightning.data.datamodules.loaders import make_loader
from clsvit_lightning.data.io import DatasetLayoutError, list_images, read_rgb
from clsvit_lightning.data.transforms.classification import classification_transform
from clsvit_lightning.data.transforms.tensors import stack_uint8


class ImageListDataset(Dataset):
    """``files[i]`` through the evaluation pipeline: ``{"image": uint8 [H, W, 3], "index": i}``."""

    def __init__(self, files: list[Path], crop_size: int, resize_size: int) -> None:
        self.files = files
        self.transform = classification_transform("eval", crop_size=crop_size, resize_size=resize_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.transform(image=read_rgb(self.files[index]))["image"], "index": index}


def collate_images(samples: list[dict]) -> dict[str, torch.Tensor]:
    """``image [B, 3, H, W]`` uint8 (normalised on the device) and the dataset ``index [B]``."""
    return {
        "image": stack_uint8([s["image"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
    }


class ImageFolderDataModule(LightningDataModule):
    """Every image under ``root`` (sorted relative paths), resized and centre-cropped as for k-NN.

    Args:
        root: a folder of images, searched recursively (an ImageNet ``train/`` or ``val/`` works as is).
        crop_size: side of the centre crop fed to the backbone (a multiple of the patch size).
        resize_size: the short side is resized to this before cropping (DINOv2 eval: 256 for 224).
    """

    def __init__(
        self,
        root: str,
        crop_size: int = 224,
        resize_size: int = 256,
        batch_size: int = 64,
        num_workers: int = 8,
        pin_memory: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dataset: ImageListDataset | None = None

    @property
    def files(self) -> list[Path]:
        """The images in the order of the written feature rows."""
        self.setup("predict")
        return self.dataset.files  # type: ignore[union-attr]

    def setup(self, stage: str) -> None:
        if self.dataset is not None:
            return
        root = Path(self.hparams.root)
        if not root.is_dir():
            raise DatasetLayoutError(
                f"data.root {root} is not a folder; expected a folder of images (searched recursively)"
            )
        files = list_images(root, recursive=True)
        if not files:
            raise DatasetLayoutError(f"no image (.jpg/.jpeg/.png/...) under {root}")
        self.dataset = ImageListDataset(files, self.hparams.crop_size, self.hparams.resize_size)

    def predict_dataloader(self) -> DataLoader:
        self.setup("predict")
        hp = self.hparams
        return make_loader(
            self.dataset, hp.batch_size, collate_images, shuffle=False, num_workers=hp.num_workers,  # type: ignore[arg-type]
            pin_memory=hp.pin_memory, persistent_workers=False,
        )  # fmt: skip
