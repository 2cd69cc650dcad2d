"""A layer's inference-only form decided once and reused: the answer of its checks (`CBlock._folds`) and the
tensors it prepared (folded and packed weights), kept until something they were built from changes.

Why: asking the checks on every call cost more than the rest of the Python around UniFormer's blocks. Each
block read ~70 module attributes through `nn.Module.__getattr__`, re-stamped its folded weights and built
a dispatch call: 37-51 us of checks per block against 13-19 us for this module's key (UniFormer-S shapes,
1 thread), and the whole forward took 0.955-0.973x the time of the same forward asking the checks on every
call (UniFormer-S, batch 1, 1 thread CPU time, interleaved in one process), the last few percent between
fastwin and ONNX Runtime there.

A plan is keyed by everything the checks and the prepared tensors depend on, read cheaply on every call:
- the call (`fastwin.ops.inference.call_state`): the input's dtype, device, layout, rank, emptiness and
  requires_grad; grad mode, autocast, oneDNN's switch, tracing / functorch / forward AD, export, the
  thread's backend choice and the packed-weight cache's generation;
- the layer's modules: which objects they are, their training flags and whether they have hooks;
- the layer's tensors: which objects, their version counters, storages, dtypes, requires_grad and whether
  they are inference tensors (`load_state_dict`, `optimizer.step()`, `.data = ...`, a new Parameter);
- whatever else the layer's checks read (`extra`: BatchNorm eps, conv geometry, an attention's backend).

A changed key runs the layer's full checks again; their answer (also "no": the module arithmetic) is
kept. Plans live outside the modules (`copy.deepcopy`, pickling and `state_dict` never see them) and die
with their layer; they hold the objects they were built from, so an id in a key cannot be reused.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, NamedTuple, Optional, Sequence

import torch
import torch.nn as nn

from ..ops import inference

__all__ = ["cached", "tensor"]

_MISSING = object()


class _Plan(NamedTuple):
    key: tuple
    held: tuple  # the modules and tensors whose ids the key holds
    data: Any  # what the layer prepared, or None: the module arithmetic runs


_plans: "weakref.WeakKeyDictionary[nn.Module, _Plan]" = weakref.WeakKeyDictionary()


def tensor(m: nn.Module, name: str) -> Optional[torch.Tensor]:
    """`getattr(m, name)` for a parameter or buffer, without `nn.Module.__getattr__`'s slow path."""
    value = m._parameters.get(name, _MISSING)
    if value is _MISSING:
        value = m._buffers.get(name, _MISSING)
    return getattr(m, name) if value is _MISSING else value


def _module_stamp(m: Optional[nn.Module]) -> tuple:
    if m is None:
        return (0,)
    return (id(m), m.training, bool(m._forward_hooks or m._forward_pre_hooks))


def _tensor_stamp(t: Optional[torch.Tensor]) -> tuple:
    if t is None:
        return (0,)
    if t.is_inference():  # no version counter to read (the checks refuse such a tensor anyway)
        return (id(t), t.data_ptr(), t.dtype, t.requires_grad, -1)
    return (id(t), t.data_ptr(), t.dtype, t.requires_grad, t._version)


def cached(layer: nn.Module, x: torch.Tensor, modules: Sequence[Optional[nn.Module]],
           tensors: Sequence[Optional[torch.Tensor]], extra: tuple, build: Callable[[], Any]) -> Any:
    """The data of `layer`'s plan for input `x`: `build()` (the layer's checks, then its prepared tensors,
    or None for the module arithmetic) when the key changed since the last call, else the kept answer.

    Args: `modules` and `tensors`: every submodule and tensor the checks or the prepared tensors read;
    `extra`: any other value they read (hashable, compared with ==).
    """
    state = inference.call_state(x)
    if state is None:
        return build()
    key = (state, tuple(_module_stamp(m) for m in modules), tuple(_tensor_stamp(t) for t in tensors), extra)
    plan = _plans.get(layer)
    if plan is not None and plan.key == key:
        return plan.data
    data = build()
    _plans[layer] = _Plan(key, (tuple(modules), tuple(tensors)), data)
    return data
