"""Import timm for benchmarking on machines without torchvision (e.g. the GPU image, CPU-only hosts).

One implementation serves the package, the tests and the benchmarks: `fastwin/timm_compat.py` (see
its docstring: placeholders for torchvision / Pillow are registered only when those packages are
missing, and anything that really uses them fails loudly).

    from timm_shim import import_timm
    timm = import_timm()          # the timm module, or None
"""
from __future__ import annotations

from fastwin.timm_compat import import_timm, placeholders

stubbed_packages = placeholders

__all__ = ["import_timm", "stubbed_packages"]
