"""Weights a layer derives once for its inference-only form: a 1x1 conv's weight as a Linear weight
[Cout, Cin], with an eval-mode BatchNorm that runs right before the conv folded in.

`conv(bn(x)) = W (s * x + t) + c = (W * s) x + (W t + c)` with `s = gamma / sqrt(var + eps)` and
`t = beta - mean * s`: the same function for BatchNorm in eval mode (running statistics), one GEMM
instead of a normalization pass and a GEMM. Derived weights are cached per conv and rebuilt whenever
one of their sources changed: another tensor object, an in-place update (version counter:
`optimizer.step()`, `load_state_dict`, BatchNorm's running statistics in a training forward) or a
new storage (`.data = ...`). They are plain tensors (built with inference mode off), so the oneDNN
cache can pack them and tell when they are replaced; an entry dies with its conv.
"""
from __future__ import annotations

import weakref
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn as nn

from .projection import plain_conv1x1

__all__ = ["conv1x1_as_linear", "foldable", "foldable_batchnorm"]


class _Entry(NamedTuple):
    sources: Tuple[Optional[torch.Tensor], ...]  # held: a freed source's id could come back
    stamps: Tuple[Tuple[int, int], ...]  # (version, data_ptr) per source, (0, 0) for None
    eps: float
    weight: torch.Tensor  # [Cout, Cin]
    bias: torch.Tensor  # [Cout]


_cache: "weakref.WeakKeyDictionary[nn.Module, _Entry]" = weakref.WeakKeyDictionary()


def foldable_batchnorm(bn: nn.Module) -> bool:
    """`bn` is exactly an eval-mode BatchNorm2d with running statistics and no hooks: an affine map per
    channel (whose tensors track versions: inference tensors do not)."""
    if type(bn) is not nn.BatchNorm2d or bn.training or bn._forward_hooks or bn._forward_pre_hooks:
        return False
    if bn.running_mean is None or bn.running_var is None:
        return False
    return not any(t is not None and t.is_inference() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var))


def foldable(conv: nn.Module) -> bool:
    """`conv` is a plain 1x1 conv (`projection.plain_conv1x1`) whose tensors track versions."""
    return plain_conv1x1(conv) and not any(t is not None and t.is_inference() for t in (conv.weight, conv.bias))


def _stamp(t: Optional[torch.Tensor]) -> Tuple[int, int]:
    return (0, 0) if t is None else (t._version, t.data_ptr())


def conv1x1_as_linear(conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """`(weight [Cout, Cin], bias [Cout])` of the Linear that computes `conv(bn(x))` on channels-last
    pixels, for a 1x1 `conv` and an optional `bn` before it (`foldable_batchnorm(bn)`)."""
    sources = (conv.weight, conv.bias) + ((bn.weight, bn.bias, bn.running_mean, bn.running_var) if bn is not None
                                          else ())
    stamps = tuple(_stamp(t) for t in sources)
    eps = bn.eps if bn is not None else 0.0
    hit = _cache.get(conv)
    if (hit is not None and hit.eps == eps and hit.stamps == stamps and len(hit.sources) == len(sources)
            and all(a is b for a, b in zip(hit.sources, sources))):
        return hit.weight, hit.bias
    with torch.inference_mode(False), torch.no_grad():
        w = conv.weight.detach().reshape(conv.out_channels, conv.in_channels)
        b = conv.bias.detach() if conv.bias is not None else w.new_zeros(conv.out_channels)
        if bn is not None:
            scale = bn.running_var.detach().add(bn.eps).rsqrt()
            if bn.weight is not None:
                scale = scale * bn.weight.detach()
            shift = -bn.running_mean.detach() * scale
            if bn.bias is not None:
                shift = shift + bn.bias.detach()
            b = torch.addmv(b, w, shift)
            w = w * scale
        w, b = w.contiguous(), b.contiguous()
    _cache[conv] = _Entry(sources, stamps, eps, w, b)
    return w, b
