"""ImageNet (ImageFolder layout) for self-distillation, supervised training, and k-NN / linear evaluation."""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from clsvit_lightning.data.datamodules.loaders import check_batch_fits, make_loader, trainer_epoch
from clsvit_lightning.data.datasets.imagenet import ImageFolderDataset
from clsvit_lightning.data.io import DatasetLayoutError
from clsvit_lightning.data.transforms.classification import classification_transform
from clsvit_lightning.data.transforms.collate import MultiCropCollate, collate_labelled
from clsvit_lightning.data.transforms.multicrop import BlurProbabilities, MultiCropTransform

ImageNetMode = Literal["ssl", "supervised", "linear", "eval"]


class ImageNetDataModule(LightningDataModule):
    """``ROOT/{train,val}/<class>/*.JPEG``; what the train loader yields depends on ``mode``.

    - ``ssl``: DINOv2 multi-crop batches (:class:`MultiCropCollate`: ``global_crops``, ``local_crops``,
      ``masks``, ``labels``);
    - ``supervised``: DeiT-III 3-Augment ``{"image", "label"}``;
    - ``linear``: random-resized-crop + flip ``{"image", "label"}`` (DINOv2 linear probe);
    - ``eval``: resize 256 / centre-crop 224, unshuffled, nothing dropped (k-NN feature banks).

    The val loader is always the eval pipeline. :meth:`feature_dataloader` gives the eval pipeline
    on any split, for k-NN callbacks during pretraining.

    ``ssl`` pretraining reads only ``train/``: ``val/`` is opened when something reads it (the val
    loader, :meth:`feature_dataloader`, ``setup("validate" | "test")``), and its absence or a flat,
    unsorted ``val/`` is then an error naming the folder. The other modes validate, so ``setup("fit")``
    checks ``val/`` up front. A ``batch_size`` larger than the training set is an error at setup (the
    training loader drops the last incomplete batch). With ``skip_corrupt`` the training set
    substitutes the next image for a corrupt one, the evaluation sets drop corrupt images.
    """

    def __init__(
        self,
        root: str,
        mode: ImageNetMode = "ssl",
        class_subset_file: str | None = None,
        batch_size: int = 64,
        val_batch_size: int | None = None,
        num_workers: int = 8,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        skip_corrupt: bool = False,
        crop_size: int = 224,
        resize_size: int = 256,
        local_crop_size: int = 96,
        num_local_crops: int = 8,
        global_crop_scale: tuple[float, float] = (0.32, 1.0),
        local_crop_scale: tuple[float, float] = (0.05, 0.32),
        blur_probabilities: BlurProbabilities = "as_applied",
        crop_antialias: bool = False,
        patch_size: int = 16,
        mask_ratio_range: tuple[float, float] = (0.1, 0.5),
        mask_sample_probability: float = 0.5,
        normalize_on_device: bool = False,
    ) -> None:
        super().__init__()
        if mode not in ("ssl", "supervised", "linear", "eval"):
            raise ValueError(f"ImageNetDataModule mode={mode!r}; expected 'ssl', 'supervised', 'linear' or 'eval'")
        self.save_hyperparameters()
        self.root, self.mode = root, mode
        self.loader_options = {
            "num_workers": num_workers,
            "pin_memory": pin_memory,
            "persistent_workers": persistent_workers,
        }

        self._eval_datasets: dict[str, ImageFolderDataset] = {}

    def _dataset(
        self, split: str, transform, classes: list[str] | None = None, evaluation: bool = False
    ) -> ImageFolderDataset:
        hp = self.hparams
        subset = hp.class_subset_file if classes is None else None
        return ImageFolderDataset(self.root, split, transform, classes, subset, hp.skip_corrupt, evaluation)

    def train_transform(self):
        hp = self.hparams
        if self.mode == "ssl":
            return MultiCropTransform(
                hp.crop_size,
                hp.local_crop_size,
                hp.num_local_crops,
                hp.global_crop_scale,
                hp.local_crop_scale,
                hp.blur_probabilities,
                antialias=hp.crop_antialias,
            )
        return classification_transform(self.mode, hp.crop_size, hp.resize_size)

    @cached_property
    def train_dataset(self) -> ImageFolderDataset:
        return self._dataset("train", self.train_transform(), evaluation=self.mode == "eval")

    @property
    def classes(self) -> list[str]:
        return self.train_dataset.classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def drop_last(self) -> bool:
        return self.mode != "eval"  # training modes shuffle and drop the last incomplete batch

    def setup(self, stage: str | None = None) -> None:
        # Building the datasets here surfaces layout errors (and a batch larger than the data) before the first step.
        if self.drop_last and stage in (None, "fit"):
            check_batch_fits(self.train_dataset, self.hparams.batch_size, self.train_dataset.description)
        self.train_dataset  # noqa: B018
        # SSL pretraining never reads val/ unless asked to (val loader, k-NN): only then is it required.
        if stage in ("validate", "test") or (stage in (None, "fit") and self.mode != "ssl"):
            self.val_dataset = self.eval_dataset("val")

    def eval_dataset(self, split: str) -> ImageFolderDataset:
        """``split`` with the eval pipeline and the train class indices (built once per split)."""
        if split not in self._eval_datasets:
            hp = self.hparams
            transform = classification_transform("eval", hp.crop_size, hp.resize_size)
            try:
                self._eval_datasets[split] = self._dataset(split, transform, self.classes, evaluation=True)
            except DatasetLayoutError as error:
                raise DatasetLayoutError(
                    f"ImageNetDataModule(mode={self.mode!r}): the {split!r} split is read for evaluation "
                    f"(val loader, k-NN / linear-probe features) but {error}"
                ) from error
        return self._eval_datasets[split]

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        if self.mode == "ssl":
            collate = MultiCropCollate(
                hp.crop_size,
                hp.patch_size,
                hp.mask_ratio_range,
                hp.mask_sample_probability,
                normalize=not hp.normalize_on_device,  # uint8 crops; the module normalises on its device
            )
        else:
            collate = collate_labelled
        shuffle = self.drop_last
        return make_loader(
            self.train_dataset,
            hp.batch_size,
            collate,
            shuffle,
            drop_last=self.drop_last,
            epoch=trainer_epoch(self),
            **self.loader_options,
        )

    def val_dataloader(self) -> DataLoader:
        if not hasattr(self, "val_dataset"):
            self.val_dataset = self.eval_dataset("val")
        return self.feature_dataloader(dataset=self.val_dataset)

    def feature_dataloader(self, split: str = "train", dataset: ImageFolderDataset | None = None) -> DataLoader:
        """Eval pipeline, in order, every sample: for k-NN banks and linear-probe features."""
        hp = self.hparams
        dataset = self.eval_dataset(split) if dataset is None else dataset
        return make_loader(dataset, hp.val_batch_size or hp.batch_size, collate_labelled, False, **self.loader_options)
