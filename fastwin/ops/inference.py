"""Whether a layer may run its inference-only form: the same function with weights a layer derived once
(BatchNorm folded into the next 1x1 conv, conv weights as Linear weights, see `fastwin.layers.folding`)
and channels-last maps, which only pays on the oneDNN GEMMs of the cpp backend.

It is the question "would this thread's backend run `conv1x1` for these tensors on the packed oneDNN
path", asked before the layer commits to a form: a layer above the dispatcher cannot ask it otherwise.
A form that then calls the packed kernels itself (UniFormer's blocks) reaches them through this module
(`linear` and `usable` of `fastwin.backend.onednn`, the cpp backend's `dwconv`) and says what it ran with `note`
(`fastwin.dispatch.note`): models and layers import neither the backends nor the dispatcher.

`in_arena` runs a model's forward in fastwin's CPU activation arena when it is an inference on CPU
(`fastwin.backend.cpu_arena`).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from .. import dispatch
from ..backend.cpu_arena import scope_for
from ..backend.cpp_backend import dwconv_inference as dwconv
from ..backend import onednn
from ..backend.onednn import linear, linear_packed, pack_linear, usable
from ..dispatch import note
from . import describe

__all__ = ["call_state", "dwconv", "folded_form", "in_arena", "linear", "linear_packed", "note", "pack_linear",
           "usable"]


def folded_form(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                *others: Optional[torch.Tensor]) -> bool:
    """True when a layer whose first GEMM is the 1x1 conv (`weight` [Cout, Cin, 1, 1], `bias` [Cout] or None)
    on the NCHW map `x` [B, Cin, H, W] may run its inference-only form, which also uses the tensors `others`
    (checked in the same `usable` call: one pass per layer).

    That is: fp32 CPU plain tensors, nothing that autograd must record, no autocast, no torch.compile /
    export / fx / jit tracing / functorch transform (`usable`), and this thread's backend choice
    runs `conv1x1` on a backend other than the reference (the reference path stays the plain module
    arithmetic, what every fast path is tested against).
    """
    if type(x) is not torch.Tensor or not usable(x, weight, bias, *others):  # first: an fx Proxy has no dim()
        return False
    name, _ = dispatch.select(describe("conv1x1", x, weight, bias))
    return name != "reference"


def call_state(x: torch.Tensor) -> Optional[tuple]:
    """Everything outside a layer that `folded_form` / `usable` and the packed weights depend on, for an
    input `x` that `folded_form` accepts or refuses: its dtype, device, layout, rank, emptiness and
    requires_grad; grad mode, autocast, oneDNN's switch, tracing / functorch / forward AD, the thread's
    backend choice and export (`dispatch.selection_state`), the packed-weight cache's generation. None
    under torch.compile, which traces the checks themselves (a layer keeps no answer there)."""
    if torch.compiler.is_compiling():
        return None
    return (x.dtype, x.device, x.layout, x.dim(), x.numel() == 0, x.requires_grad, torch.is_grad_enabled(),
            torch.is_autocast_enabled("cpu"), torch.backends.mkldnn.enabled, onednn.tracing_or_transformed(),
            dispatch.selection_state(), onednn.generation())


def in_arena(method):
    """Decorator for a model's `forward_features` / `forward_intermediates(self, x, ...)`: the call runs in
    the CPU activation arena when `x` makes it a CPU inference (`cpu_arena.scope_for`), as it is otherwise."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with scope_for(args[0] if args else kwargs.get("x")):
            return method(self, *args, **kwargs)

    return run
