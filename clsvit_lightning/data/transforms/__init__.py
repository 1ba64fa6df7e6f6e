"""Augmentation pipelines (albumentations, uint8 in and out), iBOT masking, batch collation, mixup/cutmix."""
