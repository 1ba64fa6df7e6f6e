"""Import timm where torchvision cannot be imported, to run timm's own model code.

timm imports torchvision when it is imported (``FrozenBatchNorm2d`` in its norm layers, the
``transforms`` of ``timm.data``), but its ``VisionTransformer``, ``checkpoint_filter_fn`` and
weight loader never call it. PyPI's torchvision wheels do not import beside torch 2.13's CPU build
(``operator torchvision::nms does not exist``), so when ``import torchvision`` fails,
:func:`import_timm` first installs an inert stand-in package: its attributes are placeholder
classes that nothing on the ViT path uses.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys
import types


class _Placeholder(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return f"{cls.__name__}.{name}"  # enum members such as InterpolationMode.BICUBIC


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def import_timm():
    """``timm``, or None where it is not installed; says on stderr when torchvision is stood in for."""
    if importlib.util.find_spec("timm") is None:
        return None
    try:
        import torchvision  # noqa: F401
    except Exception as error:  # noqa: BLE001 (missing, or a build for another torch)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.meta_path.insert(0, _StandInFinder())
        print(f"torchvision stood in for ({type(error).__name__}: {error})", file=sys.stderr)
    return importlib.import_module("timm")
