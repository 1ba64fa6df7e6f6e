"""Augmentation pipelines (albumentations, uint8 in and out), iBOT masking and batch collation."""
