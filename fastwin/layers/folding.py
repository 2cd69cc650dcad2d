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

__all__ = ["conv1x1_as_linear", "dwconv_with_identity", "foldable", "foldable_batchnorm", "foldable_patch_conv",
           "patch_conv_as_linear", "versioned"]


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
    return versioned(bn.weight, bn.bias, bn.running_mean, bn.running_var)


def versioned(*tensors: Optional[torch.Tensor]) -> bool:
    """None of `tensors` is an inference tensor (which has no version counter, so nothing derived from it
    could tell when it changed). False under torch.compile, which cannot trace `is_inference` and never
    runs the derived forms (so `fullgraph=True` compiles)."""
    if torch.compiler.is_compiling():
        return False
    return not any(t is not None and t.is_inference() for t in tensors)


def foldable(conv: nn.Module) -> bool:
    """`conv` is a plain 1x1 conv (`projection.plain_conv1x1`) whose tensors track versions."""
    return plain_conv1x1(conv) and versioned(conv.weight, conv.bias)


def foldable_patch_conv(conv: nn.Module) -> bool:
    """`conv` is exactly an nn.Conv2d without hooks that patchifies: square kernel = stride, no padding,
    dilation or groups, and tensors that track versions."""
    if type(conv) is not nn.Conv2d or conv._forward_hooks or conv._forward_pre_hooks:
        return False
    k = conv.kernel_size
    return (k[0] == k[1] and conv.stride == k and conv.padding == (0, 0) and conv.dilation == (1, 1)
            and conv.groups == 1 and versioned(conv.weight, conv.bias))


def _stamp(t: Optional[torch.Tensor]) -> Tuple[int, int]:
    return (0, 0) if t is None else (t._version, t.data_ptr())


def _derived(conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d], build) -> Tuple[torch.Tensor, torch.Tensor]:
    """The cached `build(weight, bias)` for `conv` (and `bn`), rebuilt when a source changed."""
    sources = (conv.weight, conv.bias) + ((bn.weight, bn.bias, bn.running_mean, bn.running_var) if bn is not None
                                          else ())
    stamps = tuple(_stamp(t) for t in sources)
    eps = bn.eps if bn is not None else 0.0
    hit = _cache.get(conv)
    if (hit is not None and hit.eps == eps and hit.stamps == stamps and len(hit.sources) == len(sources)
            and all(a is b for a, b in zip(hit.sources, sources))):
        return hit.weight, hit.bias
    with torch.inference_mode(False), torch.no_grad():
        w = conv.weight.detach()
        b = conv.bias.detach() if conv.bias is not None else w.new_zeros(conv.out_channels)
        w, b = build(w, b)
        w, b = w.contiguous(), b.contiguous()
    _cache[conv] = _Entry(sources, stamps, eps, w, b)
    return w, b


def conv1x1_as_linear(conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """`(weight [Cout, Cin], bias [Cout])` of the Linear that computes `conv(bn(x))` on channels-last
    pixels, for a 1x1 `conv` and an optional `bn` before it (`foldable_batchnorm(bn)`)."""
    def build(w, b):
        w = w.reshape(conv.out_channels, conv.in_channels)
        if bn is None:
            return w, b
        scale = bn.running_var.detach().add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight.detach()
        shift = -bn.running_mean.detach() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.detach()
        return w * scale, torch.addmv(b, w, shift)

    return _derived(conv, bn, build)


def patch_conv_as_linear(conv: nn.Conv2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """`(weight [Cout, p * p * Cin], bias [Cout])` of the Linear that computes a patchifying conv
    (kernel = stride = p, `foldable_patch_conv`) on each patch gathered as `[p (dy), p (dx), Cin]`."""
    return _derived(conv, None, lambda w, b: (w.permute(0, 2, 3, 1).reshape(conv.out_channels, -1), b))


def dwconv_with_identity(conv: nn.Conv2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """`(weight [C, 1, k, k], bias [C])` of the depthwise conv that computes `x + conv(x)` (UniFormer's
    position embedding, "same" padding, odd k): `conv`'s weight with 1 added to the centre tap, so the
    residual add is no separate pass over the map."""
    def build(w, b):
        c = w.shape[-1] // 2
        w = w.clone()
        w[:, :, c, c] += 1.0
        return w, b

    return _derived(conv, None, build)
