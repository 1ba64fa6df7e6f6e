"""Datasets read from their real on-disk layouts: ImageNet ImageFolder, ADE20K / VOC / Cityscapes, NYUv2 depth."""
