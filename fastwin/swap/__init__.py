"""`fastwin.swap(model)`: put fastwin modules into a timm / official / third-party model, in place.

One module per model family registers its rules; the import order below is the order rules are
tried on each module (outermost modules first, so a whole block is replaced before its attention).

`hf_swin` covers Hugging Face transformers' Swin v1 / V2 layers (recognised by structure; transformers
itself is never imported here).

`fastwin.swap` is both this package and the public function: the package's module object is
callable (`fastwin.swap(model)` calls `core.swap`), so `fastwin.swap.swin` and friends stay
importable while the SPEC's API name keeps working.
"""
import sys
import types

from . import swin, swin_v2, uniformer, vit, hf_swin  # noqa: F401  (register the families' rules, in this order)
from .core import Contract, Probe, SwapReport, SwapRule, register_swap, swap

__all__ = ["Contract", "Probe", "SwapReport", "SwapRule", "register_swap", "swap"]


class _CallableModule(types.ModuleType):
    def __call__(self, model):
        return swap(model)


sys.modules[__name__].__class__ = _CallableModule
