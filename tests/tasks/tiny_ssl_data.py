"""A tiny in-memory multi-crop datamodule for fast tests of the pretraining task."""

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import Dataset

from clsvit_lightning.data.seeding import seeded_dataloader


class RandomMultiCrop(Dataset):
    def __init__(self, length=16, global_size=32, local_size=16, num_local=2, patch_size=8, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(length, 3, global_size, global_size, generator=generator)
        self.local_size, self.num_local, self.patch_size = local_size, num_local, patch_size

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index]
        flipped = image.flip(-1)
        local = [image[:, i : i + self.local_size, i : i + self.local_size] for i in range(self.num_local)]
        grid = (image.shape[-1] // self.patch_size) ** 2
        mask = torch.zeros(2, grid, dtype=torch.bool)
        mask[index % 2, : 1 + index % 3] = True  # one view masked, 1-3 patches
        return torch.stack([image, flipped]), torch.stack(local), mask


def collate(samples):
    globals_, locals_, masks = zip(*samples, strict=True)
    return {
        "global_crops": torch.stack(globals_, dim=1),  # [G, B, 3, H, W]
        "local_crops": torch.stack(locals_, dim=1),  # [L, B, 3, h, w]
        "masks": torch.stack(masks, dim=1),  # [G, B, N]
    }


class TinySSLData(LightningDataModule):
    def __init__(self, batch_size: int = 4, length: int = 16):
        super().__init__()
        self.batch_size, self.length = batch_size, length

    def train_dataloader(self):
        return seeded_dataloader(RandomMultiCrop(self.length), batch_size=self.batch_size, collate_fn=collate)
