"""Import timm (tests, benchmarks, `fastwin bench`), also where torchvision is not installed.

timm (1.0.x) imports torchvision at package import time (data transforms, `FrozenBatchNorm2d`, the FX
feature extractor), but the Swin, Swin V2, ViT and DeiT model code the parity tests use never calls
it. On machines without a torchvision wheel (CPU-only hosts here), `import_timm()` therefore first
registers placeholder `torchvision` / `PIL` packages whose every attribute is a class that raises when
used, then imports timm (and its submodules that import them), then takes the placeholders out of
`sys.modules` again, so no other library mistakes them for installed packages. A real torchvision
(or Pillow) is always preferred: placeholders are only registered for packages that cannot be found.

timm is never a dependency of fastwin; callers get None from `import_timm()` when it is missing.
The GPU image has timm but no torchvision, so `fastwin bench` and the benchmarks need this too.

    from fastwin.timm_compat import import_timm
    timm = import_timm()          # the module, or None
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Optional

# Submodules timm imports from these packages while `import timm` runs.
_PLACEHOLDERS = {
    "torchvision": ("ops", "ops.misc", "transforms", "transforms.functional", "datasets", "utils", "models",
                    "models.feature_extraction"),
    "PIL": ("Image",),
}
_MARK = "__fastwin_placeholder__"
# timm's submodules that import these packages at their own import time: imported while the
# placeholders are in place, so nothing needs them afterwards.
_TIMM_MODULES = ("timm", "timm.data", "timm.optim")
_STUBBED: set = set()  # packages timm was imported on placeholders for, in this process


class _UnusableMeta(type):
    """Attributes of a placeholder class are placeholder classes (`InterpolationMode.BICUBIC` works)."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _unusable(f"{cls.__qualname__}.{name}")


def _unusable(qualname: str) -> type:
    def refuse(*_args, **_kwargs):
        raise RuntimeError(f"{qualname} is a placeholder from fastwin/timm_compat.py (the real package is not "
                           f"installed); only timm's model code works in this process")

    return _UnusableMeta(qualname, (), {"__init__": refuse, "__call__": refuse, "__module__": "timm_compat"})


class _PlaceholderModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _unusable(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


def _register(package: str, submodules) -> None:
    root = _PlaceholderModule(package)
    root.__path__ = []  # a package: `from package.sub import x` then resolves through sys.modules
    root.__version__ = "0.0.0"
    setattr(root, _MARK, True)
    sys.modules[package] = root
    for sub in submodules:
        parent, full = root, package
        for part in sub.split("."):
            full = f"{full}.{part}"
            mod = sys.modules.get(full)
            if mod is None:
                mod = _PlaceholderModule(full)
                mod.__path__ = []
                setattr(mod, _MARK, True)
                sys.modules[full] = mod
            setattr(parent, part, mod)
            parent = mod


def _unregister(package: str) -> None:
    """Take the placeholders out of `sys.modules` again (timm keeps the objects it bound): other
    libraries probe `importlib.util.find_spec("torchvision")` (transformers at import, torch.onnx at
    export), which raises ValueError on a spec-less module and would report a placeholder as an
    installed package; without them in `sys.modules` it says, truthfully, that there is none."""
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        if getattr(sys.modules[name], _MARK, False):
            del sys.modules[name]


def placeholders() -> list:
    """Packages timm was imported with placeholders for (the real ones are not installed)."""
    return sorted(_STUBBED)


def import_timm() -> Optional[types.ModuleType]:
    """The timm module, or None when timm is not installed (or does not import even with placeholders)."""
    if "timm" in sys.modules:
        return sys.modules["timm"]
    if importlib.util.find_spec("timm") is None:
        return None
    stubbed = [p for p in _PLACEHOLDERS if p not in sys.modules and importlib.util.find_spec(p) is None]
    for package in stubbed:
        _register(package, _PLACEHOLDERS[package])
    try:
        for name in _TIMM_MODULES:
            importlib.import_module(name)
        return sys.modules["timm"]
    except Exception:  # a timm version importing something else we do not provide
        return None
    finally:
        for package in stubbed:
            _unregister(package)
        _STUBBED.update(stubbed)
