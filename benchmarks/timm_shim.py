"""Import timm for benchmarking on machines without torchvision (e.g. CPU-only hosts with no wheel).

One implementation serves the tests and the benchmarks: `tests/timm_compat.py` (see its docstring:
placeholders for torchvision / Pillow are registered only when those packages are missing, and
anything that really uses them fails loudly). This module loads it by path, since the benchmarks do
not have `tests/` on their import path.

    from timm_shim import import_timm
    timm = import_timm()          # the timm module, or None
"""
from __future__ import annotations

import importlib.util
import os
import sys

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "timm_compat.py")


def _load():
    if "timm_compat" in sys.modules:
        return sys.modules["timm_compat"]
    spec = importlib.util.spec_from_file_location("timm_compat", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["timm_compat"] = module
    spec.loader.exec_module(module)
    return module


_compat = _load()
import_timm = _compat.import_timm
stubbed_packages = _compat.placeholders

__all__ = ["import_timm", "stubbed_packages"]
