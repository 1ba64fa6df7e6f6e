"""Procedural synthetic scenes written in the ImageNet and ADE20K layouts (the demo's and the tests' data)."""

from clsvit_lightning.data.synthetic.scenes import Scene, make_scene
from clsvit_lightning.data.synthetic.writers import write_synthetic

__all__ = ["Scene", "make_scene", "write_synthetic"]
