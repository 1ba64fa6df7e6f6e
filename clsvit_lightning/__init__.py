"""clsvit_lightning: pretrain and evaluate ViTs whose [CLS] and patch tokens get separate parameters."""

__version__ = "0.1.0"
