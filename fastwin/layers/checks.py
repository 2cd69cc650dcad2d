"""Input checks for module forwards (SPEC §7).

A module fed the wrong tensor should say so in its own terms, before its first Linear or conv fails
with a bare `RuntimeError` about matrix shapes. These helpers raise `TypeError` (not a tensor, wrong
device or dtype) or `ValueError` (wrong rank, channels, tokens or mask shape), naming the argument,
the module, what it expects and the shape it got, e.g.

    x must have 96 channels (last dim, [B*nW, N, 96]) for WindowAttention(dim=96), got shape (4, 49, 64)

Messages are built only on failure, so the checks cost a few attribute reads per call.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn as nn

from ..utils import fx_proxy

__all__ = ["features", "like_weights", "window_mask", "window_tokens"]


def _owner(module: nn.Module, label: str, value) -> str:
    return f"{type(module).__name__}({label}={value})"


def features(x, module: nn.Module, channels: int, layouts: Sequence[str], channel_dim: int = -1,
             name: str = "x", label: str = "dim") -> torch.Tensor:
    """Check that `x` is a tensor of one of `layouts` with `channels` entries in `channel_dim`.

    Args:
        x: the forward argument.
        module: the module being called (named in the message as `Type(label=channels)`).
        channels: the expected size of `channel_dim`.
        layouts: the accepted layouts, e.g. ("[B, H, W, C]", "[B, L, C]"); each one's rank is its
            number of entries, and `C` marks the channel entry.
        channel_dim: where the channels are (-1 for channels-last, 1 for NCHW).
        name: the argument's name. label: the constructor argument that fixed `channels`.
    Returns:
        x, unchanged.
    """
    if fx_proxy(x):  # torch.fx tracing: no shape to check
        return x
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor for {_owner(module, label, channels)}, got {type(x).__name__}")
    ranks = [layout.count(",") + 1 for layout in layouts]
    if x.dim() not in ranks:
        raise ValueError(f"{name} must be {' or '.join(layouts)} for {_owner(module, label, channels)}, "
                         f"got shape {tuple(x.shape)}")
    if x.shape[channel_dim] != channels:
        layout = re.sub(r"\bC\b", str(channels), layouts[ranks.index(x.dim())])
        where = "last dim" if channel_dim == -1 else f"dim {channel_dim}"
        raise ValueError(f"{name} must have {channels} channels ({where}, {layout}) for "
                         f"{_owner(module, label, channels)}, got shape {tuple(x.shape)}")
    return x


def window_tokens(x: torch.Tensor, module: nn.Module, window, name: str = "x") -> None:
    """`x` [B*nW, N, C] must hold N = Wh * Ww tokens per window of `window` (Wh, Ww)."""
    if fx_proxy(x):
        return
    if x.shape[1] != window[0] * window[1]:
        raise ValueError(f"{name} must have N = Wh * Ww = {window[0] * window[1]} tokens per window (dim 1) for "
                         f"{type(module).__name__}(window_size={tuple(window)}), got shape {tuple(x.shape)}")


def window_mask(mask, x: torch.Tensor, n: int, module: nn.Module, name: str = "mask") -> None:
    """An optional Swin shift mask: None, or [nW, N, N] with nW dividing the window batch `x.shape[0]`."""
    if mask is None or fx_proxy(x) or fx_proxy(mask):
        return
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None for {type(module).__name__}, got {type(mask).__name__}")
    if mask.dim() != 3 or tuple(mask.shape[1:]) != (n, n) or mask.shape[0] == 0 or x.shape[0] % mask.shape[0]:
        raise ValueError(f"{name} must be [nW, {n}, {n}] with nW dividing x.shape[0] = {x.shape[0]} for "
                         f"{type(module).__name__}, got shape {tuple(mask.shape)}")
    if mask.device != x.device:
        raise TypeError(f"{name} is on {mask.device} but x is on {x.device}")


def like_weights(x: torch.Tensor, weight: torch.Tensor, module: nn.Module, name: str = "x") -> None:
    """`x` must be on the device of the module's weights, and of their dtype unless autocast is on."""
    if fx_proxy(x):
        return
    if x.device != weight.device:
        raise TypeError(f"{name} is on {x.device} but the weights of {type(module).__name__} are on {weight.device}")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{name} has dtype {x.dtype} but the weights of {type(module).__name__} are "
                        f"{weight.dtype}; cast one of them (or run under torch.autocast)")
