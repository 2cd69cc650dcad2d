"""A module's Linear / 1x1 conv run through `fastwin.ops` (so a backend may prepack its weight and fuse
the activation or residual add after it), falling back to calling the module where that would change
what runs: a subclass (LoRA wrappers, quantized layers), a module with hooks, a conv that is not a
plain 1x1."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .. import ops
from ..ops.inference import folded_form
from .drop import DropPath

__all__ = ["add_into", "conv1x1", "conv_geometry", "linear", "passes_through", "patch_conv", "plain_conv1x1"]

# oneDNN's NCHW kernel for a patchifying conv over an image of a few channels is the slow one: Swin-T's
# 3 -> 96, k = s = 4 stem took 2.15 ms at b1 and 17.3 ms at b8 (1 thread), on a channels-last copy of the
# image 0.63 and 4.8 ms (its NHWC kernel; the copy included, bit-identical); UniFormer-S's 3 -> 64 stem
# 24.6 -> 5.4 ms at b8. From 64 channels the copy costs more than it saves.
_IMAGE_CHANNELS = 4


def _plain(m: nn.Module, cls) -> bool:
    return type(m) is cls and not (m._forward_hooks or m._forward_pre_hooks)


def conv_geometry(m: nn.Conv2d) -> tuple:
    """`(kernel_size, stride, padding, dilation, groups, padding_mode)` of a conv."""
    return m.kernel_size, m.stride, m.padding, m.dilation, m.groups, m.padding_mode


_CONV1X1 = ((1, 1), (1, 1), (0, 0), (1, 1), 1, "zeros")


def plain_conv1x1(m: nn.Module) -> bool:
    """`m` is exactly an nn.Conv2d without hooks computing a 1x1, stride-1, unpadded, ungrouped conv."""
    return _plain(m, nn.Conv2d) and conv_geometry(m) == _CONV1X1


def patch_conv(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)` for a model's stem conv on an image `x` [B, C, H, W], run on a channels-last copy of `x`
    when that is the fast kernel and nothing else can tell: a plain nn.Conv2d (no hooks) over at most 4
    channels, a contiguous NCHW image, and an inference the fast backends run (`folded_form`: fp32 CPU, no
    autograd, not the reference backend). The result is then in channels-last memory."""
    if (_plain(conv, nn.Conv2d) and conv.in_channels <= _IMAGE_CHANNELS and type(x) is torch.Tensor
            and x.dim() == 4 and x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
            and folded_form(x, conv.weight[:, :, :1, :1], conv.bias)):
        x = x.contiguous(memory_format=torch.channels_last)
    return conv(x)


def passes_through(*modules: nn.Module) -> bool:
    """Every module is the identity for this call (nn.Identity, or dropout / drop path not dropping),
    so `x + m(y)` may be computed as one fused residual add."""
    for m in modules:
        if type(m) is nn.Identity:
            continue
        if type(m) is nn.Dropout and (not m.training or m.p == 0.0):
            continue
        if type(m) is DropPath and (not m.training or m.drop_prob == 0.0):
            continue
        return False
    return True


def linear(m: nn.Module, x: torch.Tensor, residual: Optional[torch.Tensor] = None,
           backend: Optional[str] = None) -> torch.Tensor:
    """`[residual +] m(x)` for a Linear `m`: [..., in] -> [..., out]; `backend` as `fastwin.ops.linear`'s."""
    if _plain(m, nn.Linear):
        return ops.linear(x, m.weight, m.bias, residual, backend=backend)
    y = m(x)
    return y if residual is None else residual + y


def conv1x1(m: nn.Module, x: torch.Tensor, act: Optional[nn.Module] = None,
            residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`[residual +] act(m(x))` for a 1x1 Conv2d `m` on NCHW x: [B, Cin, H, W] -> [B, Cout, H, W]."""
    gelu = act.approximate if act is not None and _plain(act, nn.GELU) else None
    if plain_conv1x1(m) and (act is None or gelu is not None):
        return ops.conv1x1(x, m.weight, m.bias, gelu, residual)
    y = m(x) if act is None else act(m(x))
    return y if residual is None else residual + y


def add_into(m: nn.Module, cls, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """`residual + m(x)`, with the residual handed to m's forward (its last projection's epilogue) when m
    is exactly `cls`, whose forward takes `residual=`; any other module (e.g. one `swap` kept) is called
    as it is."""
    if type(m) is cls:
        return m(x, residual=residual)
    return residual + m(x)
