"""Functional ops: validate arguments, pick a backend, run it.

All ops take the packed qkv projection output (channel order `(3, heads, d)`, exactly what
`nn.Linear(C, 3C)` produces) so the fused kernels can read q, k and v without a copy.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from .. import dispatch
from ..reference.window import PAD_ORDERS
from . import checks

IntOrPair = Union[int, Tuple[int, int]]

__all__ = ["shifted_window_attention", "window_attention", "attention", "dwconv2d", "dwconv_layernorm", "last_backend", "last_call"]

_last = {"backend": None, "call": None}


def last_backend() -> Optional[str]:
    """Name of the backend that ran the most recent fastwin op (for tests and debugging)."""
    return _last["backend"]


def last_call() -> Optional[dispatch.Call]:
    """The `dispatch.Call` of the most recent fastwin op (what backends were asked to support)."""
    return _last["call"]


def _run(op: str, ref: torch.Tensor, requires_grad: bool, params: dict, *args):
    call = dispatch.Call(op, ref.device, ref.dtype, requires_grad, tuple(sorted(params.items())))
    name, impl = dispatch.select(call)
    _last["backend"], _last["call"] = name, call
    return impl(*args)


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def shifted_window_attention(
    qkv: torch.Tensor,
    num_heads: int,
    window_size: IntOrPair,
    shift_size: IntOrPair = 0,
    rel_pos_bias_table: Optional[torch.Tensor] = None,
    qkv_bias: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    pad_order: str = "roll_pad",
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Swin (shifted-)window attention on an un-partitioned qkv map, partition-free.

    Computes, without materializing any of the intermediate copies: cyclic shift by `-shift_size`
    and zero-padding of the map to a multiple of the window (in `pad_order`), window partition,
    `softmax((q * scale) @ k^T + table[relative_position_index] + shift_mask) @ v` per window and
    head (shift mask: -100.0 between regions of the shifted padded map), window reverse, crop and
    the inverse shift.

    Args:
        qkv: [B, H, W, 3 * heads * d], the qkv Linear applied to the *unpadded* normalized map;
            any strides.
        num_heads: number of heads.
        window_size: Wh or (Wh, Ww) — the effective window; shrink it to the map beforehand if the
            model does (official Swin shrinks when the map is not larger than the window).
        shift_size: s or (sh, sw), each `0 <= s < window`.
        rel_pos_bias_table: [(2*Wh-1)*(2*Ww-1), heads] or None.
        qkv_bias: [3 * heads * d] or None: the q/k/v that padded tokens carry (Linear of zeros).
        scale: logit scale, default d ** -0.5.
        pad_order: "roll_pad" (timm: roll, then pad) or "pad_roll" (detection code: pad, then roll).
        dropout_p: attention dropout probability (only the reference path implements it).

    Returns:
        [B, H, W, heads * d] at the original (un-shifted) positions.
    """
    checks.tensor("qkv", qkv, 4, "[B, H, W, 3 * heads * d]")
    d = checks.heads_and_dim("qkv", qkv.shape[-1], num_heads, qkv.shape)
    window = checks.pair("window_size", window_size)
    shift = checks.pair("shift_size", shift_size, allow_zero=True)
    if shift[0] >= window[0] or shift[1] >= window[1]:
        raise ValueError(f"shift_size must be smaller than window_size in each dim, got shift {shift}, window {window}")
    checks.bias_table(rel_pos_bias_table, qkv, window, num_heads)
    checks.optional_like("qkv_bias", qkv_bias, qkv, "qkv", (qkv.shape[-1],))
    if pad_order not in PAD_ORDERS:
        raise ValueError(f"pad_order must be one of {PAD_ORDERS}, got {pad_order!r}")
    scale = checks.scale(scale, d)
    dropout_p = checks.dropout(dropout_p)
    params = dict(head_dim=d, window_size=window, shift_size=shift, dropout_p=dropout_p, pad_order=pad_order)
    grad = _needs_grad(qkv, rel_pos_bias_table, qkv_bias)
    return _run("shifted_window_attention", qkv, grad, params,
                qkv, num_heads, window, shift, rel_pos_bias_table, qkv_bias, scale, pad_order, dropout_p)


def window_attention(
    qkv: torch.Tensor,
    num_heads: int,
    window_size: IntOrPair,
    rel_pos_bias_table: Optional[torch.Tensor] = None,
    mask: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Multi-head attention inside windows the caller already partitioned (official `WindowAttention`).

    Args:
        qkv: [B_, N, 3 * heads * d], B_ = batch * nW, N = Wh * Ww.
        num_heads: number of heads.
        window_size: Wh or (Wh, Ww).
        rel_pos_bias_table: [(2*Wh-1)*(2*Ww-1), heads] or None.
        mask: [nW, N, N] added to the logits of window `b_ % nW` (0 / -100.0 for Swin), or None.
        scale: logit scale, default d ** -0.5.
        dropout_p: attention dropout probability (only the reference path implements it).

    Returns:
        [B_, N, heads * d].
    """
    checks.tensor("qkv", qkv, 3, "[B*nW, N, 3 * heads * d]")
    d = checks.heads_and_dim("qkv", qkv.shape[-1], num_heads, qkv.shape)
    window = checks.pair("window_size", window_size)
    n = window[0] * window[1]
    if qkv.shape[1] != n:
        raise ValueError(f"qkv has {qkv.shape[1]} tokens per window but window_size {window} has {n} (shape {tuple(qkv.shape)})")
    checks.bias_table(rel_pos_bias_table, qkv, window, num_heads)
    if mask is not None:
        checks.tensor("mask", mask, 3, "[nW, N, N]")
        checks.same_device("mask", mask, "qkv", qkv)
        if mask.shape[1:] != (n, n) or mask.shape[0] == 0 or qkv.shape[0] % mask.shape[0]:
            raise ValueError(
                f"mask must have shape [nW, {n}, {n}] with nW dividing qkv.shape[0] = {qkv.shape[0]}, "
                f"got {tuple(mask.shape)}"
            )
    scale = checks.scale(scale, d)
    dropout_p = checks.dropout(dropout_p)
    params = dict(head_dim=d, window_size=window, has_mask=mask is not None, dropout_p=dropout_p)
    grad = _needs_grad(qkv, rel_pos_bias_table, mask)
    return _run("window_attention", qkv, grad, params, qkv, num_heads, window, rel_pos_bias_table, mask, scale, dropout_p)


def attention(
    qkv: torch.Tensor, num_heads: int, scale: Optional[float] = None, dropout_p: float = 0.0
) -> torch.Tensor:
    """Global multi-head self-attention over all tokens (UniFormer SABlocks, ViT/DeiT).

    Args:
        qkv: [B, N, 3 * heads * d].
        num_heads: number of heads.
        scale: logit scale, default d ** -0.5.
        dropout_p: attention dropout probability (only the reference path implements it).

    Returns:
        [B, N, heads * d].
    """
    checks.tensor("qkv", qkv, 3, "[B, N, 3 * heads * d]")
    d = checks.heads_and_dim("qkv", qkv.shape[-1], num_heads, qkv.shape)
    scale = checks.scale(scale, d)
    dropout_p = checks.dropout(dropout_p)
    params = dict(head_dim=d, seq_len=qkv.shape[1], dropout_p=dropout_p)
    return _run("attention", qkv, _needs_grad(qkv), params, qkv, num_heads, scale, dropout_p)


def dwconv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    residual: bool = False,
    layout: str = "NCHW",
) -> torch.Tensor:
    """Depthwise 2-D convolution, stride 1, "same" padding, odd square kernel, optional residual.

    Args:
        x: [B, C, H, W] for layout "NCHW" (contiguous or channels-last memory format),
            or [B, H, W, C] for layout "NHWC".
        weight: [C, 1, k, k], k odd (3, 5, 7 in UniFormer).
        bias: [C] or None.
        residual: return `x + dwconv(x)` (UniFormer's dynamic position embedding).
        layout: "NCHW" or "NHWC" (how `x` is indexed, not its memory format).

    Returns:
        same shape and layout as `x`.
    """
    _check_dwconv(x, weight, bias, layout)
    if not isinstance(residual, bool):
        raise TypeError(f"residual must be a bool, got {type(residual).__name__}")
    k = weight.shape[-1]
    channels_last = layout == "NHWC" or x.is_contiguous(memory_format=torch.channels_last)
    params = dict(kernel_size=k, layout=layout, channels_last=channels_last, residual=residual,
                  channels=weight.shape[0])
    grad = _needs_grad(x, weight, bias)
    return _run("dwconv2d", x, grad, params, x, weight, bias, residual, layout)


def _check_dwconv(x, weight, bias, layout) -> int:
    """Validate depthwise-conv arguments; returns the channel count."""
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    checks.tensor("x", x, 4, "[B, C, H, W]" if layout == "NCHW" else "[B, H, W, C]")
    channels = x.shape[1] if layout == "NCHW" else x.shape[3]
    checks.tensor("weight", weight, 4, "[C, 1, k, k]")
    k = weight.shape[-1]
    if weight.shape[0] != channels or weight.shape[1] != 1 or weight.shape[2] != k:
        raise ValueError(
            f"weight must have shape [C, 1, k, k] = [{channels}, 1, k, k] for x of shape {tuple(x.shape)} "
            f"({layout}), got {tuple(weight.shape)}"
        )
    if k % 2 == 0:
        raise ValueError(f"weight kernel size must be odd for 'same' padding, got {k} (shape {tuple(weight.shape)})")
    checks.same_device("weight", weight, "x", x)
    if weight.dtype != x.dtype:
        raise TypeError(f"weight has dtype {weight.dtype} but x has dtype {x.dtype}; cast one of them")
    checks.optional_like("bias", bias, x, "x", (channels,))
    return channels


def dwconv_layernorm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    ln_weight: Optional[torch.Tensor],
    ln_bias: Optional[torch.Tensor],
    eps: float = 1e-6,
    layout: str = "NCHW",
):
    """UniFormer SABlock entry in one pass: `t = flatten(x + dwconv(x))`, `n = LayerNorm(t)`.

    Args:
        x: [B, C, H, W] ("NCHW", contiguous or channels-last) or [B, H, W, C] ("NHWC").
        weight: [C, 1, k, k], k odd; bias: [C] or None (the position-embedding conv).
        ln_weight, ln_bias: [C] or None (the LayerNorm's affine parameters).
        eps: LayerNorm epsilon (UniFormer uses 1e-6).
        layout: "NCHW" or "NHWC".

    Returns:
        (tokens, normed), both [B, H*W, C]: the residual stream and its LayerNorm.
    """
    channels = _check_dwconv(x, weight, bias, layout)
    checks.optional_like("ln_weight", ln_weight, x, "x", (channels,))
    checks.optional_like("ln_bias", ln_bias, x, "x", (channels,))
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive float, got {eps!r}")
    channels_last = layout == "NHWC" or x.is_contiguous(memory_format=torch.channels_last)
    params = dict(kernel_size=weight.shape[-1], layout=layout, channels_last=channels_last, channels=channels)
    grad = _needs_grad(x, weight, bias, ln_weight, ln_bias)
    return _run("dwconv_layernorm", x, grad, params, x, weight, bias, ln_weight, ln_bias, float(eps), layout)
