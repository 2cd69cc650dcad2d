"""Small helpers shared by layers, models and swap rules (torch only; no backend or reference code)."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

__all__ = ["ceil_div", "fx_proxy", "init_weights_trunc_normal", "pair"]


def fx_proxy(x) -> bool:
    """True when `x` is a `torch.fx.Proxy`, i.e. `torch.fx.symbolic_trace` is tracing the caller.

    Input checks read types, shapes and values that a Proxy does not have, so they skip themselves
    for Proxies; the fused ops are `torch.fx.wrap`ped (leaf calls of the graph) and still check the
    tensors the traced module passes them. The one place that decides "am I being traced" for every
    check.
    """
    return isinstance(x, torch.fx.Proxy)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def pair(name: str, v, allow_zero: bool = False) -> Tuple[int, int]:
    """An int or a pair of ints -> (a, b); ValueError naming `name` otherwise."""
    lo = 0 if allow_zero else 1
    if type(v) is int and v >= lo:  # the common cases first: ops run this on every call
        return v, v
    if type(v) is tuple and len(v) == 2 and type(v[0]) is int and type(v[1]) is int and v[0] >= lo and v[1] >= lo:
        return v
    if isinstance(v, torch.Size):
        v = tuple(v)
    vals = (v, v) if isinstance(v, int) and not isinstance(v, bool) else v
    if not isinstance(vals, (tuple, list)) or len(vals) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    if any(isinstance(x, bool) or not isinstance(x, int) or x < lo for x in vals):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'} ints, got {v!r}")
    return int(vals[0]), int(vals[1])


def init_weights_trunc_normal(m: nn.Module) -> None:
    """The official Swin / UniFormer / timm init: truncated-normal(0.02) Linear weights, zero biases,
    unit LayerNorm (use with `model.apply`)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
