"""Functional ops: validate the arguments, describe the call, run it on the chosen backend.

All attention ops take the packed qkv projection output (channel order `(3, heads, d)`, exactly what
`nn.Linear(C, 3C)` produces) so the fused kernels can read q, k and v without a copy. Every op takes
`backend=None` to override the thread's backend choice for that call (see `fastwin.dispatch`).
`describe(op, *args, **kwargs)` returns the `dispatch.Call` an op call would be dispatched with,
without running anything; `fastwin.dispatch.choose`-style questions go through `dispatch.select`.

Masks follow the reference: an additive mask row that is entirely `-inf` (a query that may attend
to nothing) gives an output row of zeros and zero gradients on every backend.

Autocast: every op is matmul or convolution work, which `torch.autocast` runs in its lower precision
(Linear, conv2d and SDPA are on its lower-precision lists on CPU and CUDA). So while autocast is on
for the inputs' device, an op casts its floating inputs (not float64, as autocast) to the autocast
dtype before validating them, and runs with autocast off, so that every backend, the reference
included, computes in that one dtype (the kernels accumulate in fp32) and returns it.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple, Union

import torch

from .. import contract, dispatch
from ..reference.window import PAD_ORDERS, relative_position_index, shift_mask
from . import checks

IntOrPair = Union[int, Tuple[int, int]]

__all__ = ["PAD_ORDERS", "arguments", "attention", "backend_name", "bound", "conv1x1", "describe", "dwconv2d", "dwconv_layernorm",
           "linear", "linear_gelu", "record", "relative_position_index", "shift_mask", "shifted_window_attention",
           "window_attention"]


def backend_name(name: Optional[str]) -> Optional[str]:
    """Validate a `backend=` value a module keeps (None, "auto" or a backend name; availability is
    checked when the module runs, since modules are often built before moving to a GPU)."""
    if name is not None and name not in dispatch.CHOICES:
        raise ValueError(f"backend must be None or one of {dispatch.CHOICES}, got {name!r}")
    return name


def bound(fn: Callable) -> Callable:
    """`fn` running with this thread's current backend choice wherever it is called (for checkpointed
    blocks, which autograd may recompute in its own threads); see `fastwin.dispatch.bind`."""
    return dispatch.bind(fn)


def record():
    """Context manager listing, in order, which backend ran each fastwin op in this thread (see
    `fastwin.dispatch.record`); for layers above the dispatcher, e.g. swap rules that check that a
    fused path really runs."""
    return dispatch.record()


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type autocast does not know (meta)
        return False


def _autocast(*args):
    """args with floating tensors in the autocast dtype while autocast is on for their device (see the
    module docstring); anything else (None, float64, integer tensors, non-tensors) unchanged."""
    first = next((a for a in args if isinstance(a, torch.Tensor)), None)
    if first is None or not _autocast_on(first.device.type):
        return args
    dtype = torch.get_autocast_dtype(first.device.type)
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dtype != torch.float64
                 and a.device == first.device else a for a in args)


def _run(call, backend, args):
    """dispatch.run, with autocast off while it is on for the call's device (the inputs are cast)."""
    if _autocast_on(call.device_type):
        with torch.autocast(call.device_type, enabled=False):
            return dispatch.run(call, backend, *args)
    return dispatch.run(call, backend, *args)


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _logit_scale(t, qkv: torch.Tensor, num_heads: int) -> Optional[torch.Tensor]:
    """Swin V2's per-head logit multiplier: [heads] (or [heads, 1, 1]) -> [heads] in qkv's dtype."""
    if t is None:
        return None
    checks.tensor("logit_scale", t)
    checks.same_device("logit_scale", t, "qkv", qkv)
    if t.numel() != num_heads:
        raise ValueError(f"logit_scale must have num_heads = {num_heads} elements ([heads] or [heads, 1, 1]), "
                         f"got shape {tuple(t.shape)}")
    checks.finite_tensor("logit_scale", t, "an inf or NaN multiplier makes the logits NaN")
    return t.reshape(num_heads).to(qkv.dtype)


# ------------------------------------------------------------------------------------------- attention

def _shifted_window_attention(qkv, num_heads, window_size, shift_size=0, rel_pos_bias_table=None, qkv_bias=None,
                              scale=None, pad_order="roll_pad", dropout_p=0.0, logit_scale=None):
    qkv, rel_pos_bias_table, qkv_bias, logit_scale = _autocast(qkv, rel_pos_bias_table, qkv_bias, logit_scale)
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
    scale = checks.scale(scale, d, qkv.dtype)
    dropout_p = checks.dropout(dropout_p)
    logit_scale = _logit_scale(logit_scale, qkv, num_heads)
    call = dispatch.WindowAttentionCall(
        "shifted_window_attention", qkv.device.type, qkv.dtype,
        _needs_grad(qkv, rel_pos_bias_table, qkv_bias, logit_scale), num_heads, d, window, shift, pad_order,
        dropout_p, rel_pos_bias_table is not None, qkv_bias is not None, False, logit_scale is not None)
    return call, (qkv, rel_pos_bias_table, qkv_bias, num_heads, window, shift, scale, pad_order == "pad_roll",
                  dropout_p, logit_scale)


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
    logit_scale: Optional[torch.Tensor] = None,
    backend: Optional[str] = None,
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
        logit_scale: Swin V2 cosine attention: [heads] per-head multipliers (already clamped and
            exponentiated); q and k are L2-normalized per head and `scale` is ignored.
        backend: run this call on this backend instead of the thread's choice.

    Returns:
        [B, H, W, heads * d] at the original (un-shifted) positions.
    """
    call, args = _shifted_window_attention(qkv, num_heads, window_size, shift_size, rel_pos_bias_table, qkv_bias,
                                           scale, pad_order, dropout_p, logit_scale)
    return _run(call, backend, args)


def _window_attention(qkv, num_heads, window_size, rel_pos_bias_table=None, mask=None, scale=None, dropout_p=0.0,
                      logit_scale=None):
    qkv, rel_pos_bias_table, mask, logit_scale = _autocast(qkv, rel_pos_bias_table, mask, logit_scale)
    checks.tensor("qkv", qkv, 3, "[B*nW, N, 3 * heads * d]")
    d = checks.heads_and_dim("qkv", qkv.shape[-1], num_heads, qkv.shape)
    window = checks.pair("window_size", window_size)
    n = window[0] * window[1]
    if qkv.shape[1] != n:
        raise ValueError(f"qkv has {qkv.shape[1]} tokens per window but window_size {window} has {n} "
                         f"(shape {tuple(qkv.shape)})")
    checks.bias_table(rel_pos_bias_table, qkv, window, num_heads)
    if mask is not None:
        checks.tensor("mask", mask, 3, "[nW, N, N]")
        checks.same_device("mask", mask, "qkv", qkv)
        if mask.shape[1:] != (n, n) or mask.shape[0] == 0 or qkv.shape[0] % mask.shape[0]:
            raise ValueError(
                f"mask must have shape [nW, {n}, {n}] with nW dividing qkv.shape[0] = {qkv.shape[0]}, "
                f"got {tuple(mask.shape)}"
            )
        mask = mask.to(qkv.dtype)  # added in qkv's dtype, as the official code does
    scale = checks.scale(scale, d, qkv.dtype)
    dropout_p = checks.dropout(dropout_p)
    logit_scale = _logit_scale(logit_scale, qkv, num_heads)
    call = dispatch.WindowAttentionCall(
        "window_attention", qkv.device.type, qkv.dtype, _needs_grad(qkv, rel_pos_bias_table, mask, logit_scale),
        num_heads, d, window, (0, 0), "roll_pad", dropout_p, rel_pos_bias_table is not None, False,
        mask is not None, logit_scale is not None)
    return call, (qkv, rel_pos_bias_table, mask, num_heads, window, scale, dropout_p, logit_scale)


def window_attention(
    qkv: torch.Tensor,
    num_heads: int,
    window_size: IntOrPair,
    rel_pos_bias_table: Optional[torch.Tensor] = None,
    mask: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    dropout_p: float = 0.0,
    logit_scale: Optional[torch.Tensor] = None,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """Multi-head attention inside windows the caller already partitioned (official `WindowAttention`).

    Args:
        qkv: [B_, N, 3 * heads * d], B_ = batch * nW, N = Wh * Ww.
        num_heads: number of heads.
        window_size: Wh or (Wh, Ww).
        rel_pos_bias_table: [(2*Wh-1)*(2*Ww-1), heads] or None.
        mask: [nW, N, N] added to the logits of window `b_ % nW` (0 / -100.0 for Swin), or None;
            differentiable.
        scale: logit scale, default d ** -0.5.
        dropout_p: attention dropout probability (only the reference path implements it).
        logit_scale: Swin V2 cosine attention, as in `shifted_window_attention`.
        backend: run this call on this backend instead of the thread's choice.

    Returns:
        [B_, N, heads * d].
    """
    call, args = _window_attention(qkv, num_heads, window_size, rel_pos_bias_table, mask, scale, dropout_p,
                                   logit_scale)
    return _run(call, backend, args)


def _attention(qkv, num_heads, scale=None, dropout_p=0.0):
    qkv, = _autocast(qkv)
    checks.tensor("qkv", qkv, 3, "[B, N, 3 * heads * d]")
    d = checks.heads_and_dim("qkv", qkv.shape[-1], num_heads, qkv.shape)
    scale = checks.scale(scale, d, qkv.dtype)
    dropout_p = checks.dropout(dropout_p)
    call = dispatch.AttentionCall("attention", qkv.device.type, qkv.dtype, _needs_grad(qkv), num_heads, d,
                                  qkv.shape[1], dropout_p)
    return call, (qkv, num_heads, scale, dropout_p)


def attention(qkv: torch.Tensor, num_heads: int, scale: Optional[float] = None, dropout_p: float = 0.0,
              backend: Optional[str] = None) -> torch.Tensor:
    """Global multi-head self-attention over all tokens (UniFormer SABlocks, ViT/DeiT).

    Args:
        qkv: [B, N, 3 * heads * d].
        num_heads: number of heads.
        scale: logit scale, default d ** -0.5.
        dropout_p: attention dropout probability (only the reference path implements it).
        backend: run this call on this backend instead of the thread's choice.

    Returns:
        [B, N, heads * d].
    """
    call, args = _attention(qkv, num_heads, scale, dropout_p)
    return _run(call, backend, args)


# -------------------------------------------------------------------------------------- depthwise conv

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


def _channels_last(x: torch.Tensor) -> bool:
    try:
        return x.is_contiguous(memory_format=torch.channels_last)
    except RuntimeError:  # under torch.func.vmap memory formats cannot be queried: a hint only
        return False


def _conv_call(op, x, weight, bias, layout, channels, residual, *grad_inputs) -> dispatch.ConvCall:
    channels_last = layout == "NHWC" or _channels_last(x)
    return dispatch.ConvCall(op, x.device.type, x.dtype, _needs_grad(x, weight, bias, *grad_inputs),
                             weight.shape[-1], channels, layout, channels_last, residual, bias is not None)


def _dwconv2d(x, weight, bias=None, residual=False, layout="NCHW"):
    x, weight, bias = _autocast(x, weight, bias)
    channels = _check_dwconv(x, weight, bias, layout)
    if not isinstance(residual, bool):
        raise TypeError(f"residual must be a bool, got {type(residual).__name__}")
    return _conv_call("dwconv2d", x, weight, bias, layout, channels, residual), (x, weight, bias, residual, layout)


def dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, residual: bool = False,
             layout: str = "NCHW", backend: Optional[str] = None) -> torch.Tensor:
    """Depthwise 2-D convolution, stride 1, "same" padding, odd square kernel, optional residual.

    Args:
        x: [B, C, H, W] for layout "NCHW" (contiguous or channels-last memory format),
            or [B, H, W, C] for layout "NHWC".
        weight: [C, 1, k, k], k odd (3, 5, 7 in UniFormer).
        bias: [C] or None.
        residual: return `x + dwconv(x)` (UniFormer's dynamic position embedding).
        layout: "NCHW" or "NHWC" (how `x` is indexed, not its memory format).
        backend: run this call on this backend instead of the thread's choice.

    Returns:
        same shape and layout as `x`.
    """
    call, args = _dwconv2d(x, weight, bias, residual, layout)
    return _run(call, backend, args)


def _dwconv_layernorm(x, weight, bias, ln_weight, ln_bias, eps=1e-6, layout="NCHW"):
    x, weight, bias, ln_weight, ln_bias = _autocast(x, weight, bias, ln_weight, ln_bias)
    channels = _check_dwconv(x, weight, bias, layout)
    checks.optional_like("ln_weight", ln_weight, x, "x", (channels,))
    checks.optional_like("ln_bias", ln_bias, x, "x", (channels,))
    eps = checks.finite_float("eps", eps, positive=True)
    call = _conv_call("dwconv_layernorm", x, weight, bias, layout, channels, True, ln_weight, ln_bias)
    return call, (x, weight, bias, ln_weight, ln_bias, eps, layout)


def dwconv_layernorm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    ln_weight: Optional[torch.Tensor],
    ln_bias: Optional[torch.Tensor],
    eps: float = 1e-6,
    layout: str = "NCHW",
    backend: Optional[str] = None,
):
    """UniFormer SABlock entry in one pass: `t = flatten(x + dwconv(x))`, `n = LayerNorm(t)`.

    Args:
        x: [B, C, H, W] ("NCHW", contiguous or channels-last) or [B, H, W, C] ("NHWC").
        weight: [C, 1, k, k], k odd; bias: [C] or None (the position-embedding conv).
        ln_weight, ln_bias: [C] or None (the LayerNorm's affine parameters).
        eps: LayerNorm epsilon (UniFormer uses 1e-6).
        layout: "NCHW" or "NHWC".
        backend: run this call on this backend instead of the thread's choice.

    Returns:
        (tokens, normed), both [B, H*W, C]: the residual stream and its LayerNorm.
    """
    call, args = _dwconv_layernorm(x, weight, bias, ln_weight, ln_bias, eps, layout)
    return _run(call, backend, args)


# ---------------------------------------------------------------------------------------------- MLP

_GELU_FORMS = ("none", "tanh")


def _check_dtypes(x, named, autocast_casts: bool) -> None:
    """Each (name, tensor, shape) in `named` (tensor may be None) has that shape, x's device and x's dtype;
    with `autocast_casts` and autocast on x's device any float dtype passes (the op casts as F.linear does)."""
    any_dtype = autocast_casts and torch.is_autocast_enabled(x.device.type)
    for name, t, shape in named:
        if not any_dtype:
            checks.optional_like(name, t, x, "x", shape)
        elif t is not None:
            checks.tensor(name, t)
            if tuple(t.shape) != tuple(shape):
                raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
            checks.same_device(name, t, "x", x)


def _check_linear(x, weight, bias, autocast_casts: bool = False) -> None:
    checks.tensor("x", x)
    if x.dim() < 1:
        raise ValueError(f"x must be [..., in_features], got shape {tuple(x.shape)}")
    checks.tensor("weight", weight, 2, "[out_features, in_features]")
    if weight.shape[1] != x.shape[-1]:
        raise ValueError(f"weight must have shape [out_features, {x.shape[-1]}] for x of shape {tuple(x.shape)}, "
                         f"got {tuple(weight.shape)}")
    _check_dtypes(x, (("weight", weight, tuple(weight.shape)), ("bias", bias, (weight.shape[0],))), autocast_casts)


def _linear_gelu(x, weight, bias=None, approximate="none"):
    x, weight, bias = _autocast(x, weight, bias)
    _check_linear(x, weight, bias)
    if approximate not in _GELU_FORMS:
        raise ValueError(f"approximate must be one of {_GELU_FORMS}, got {approximate!r}")
    call = dispatch.LinearCall("linear_gelu", x.device.type, x.dtype, _needs_grad(x, weight, bias),
                               weight.shape[1], weight.shape[0], approximate, bias is not None)
    # a kernel keeps the pre-activation for the backward only when autograd (or a transform) may ask for it
    return call, (x, weight, bias, approximate, call.requires_grad or contract.transforming())


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                approximate: str = "none", backend: Optional[str] = None) -> torch.Tensor:
    """`gelu(x @ weight^T + bias)`: an MLP's first Linear and its activation in one pass.

    Args:
        x: [..., in_features]; weight: [out_features, in_features]; bias: [out_features] or None.
        approximate: "none" (erf form) or "tanh", as `torch.nn.GELU`.
        backend: run this call on this backend instead of the thread's choice.

    Returns:
        [..., out_features].
    """
    call, args = _linear_gelu(x, weight, bias, approximate)
    return _run(call, backend, args)


def _linear(x, weight, bias=None, residual=None):
    _check_linear(x, weight, bias, autocast_casts=True)  # nn.Linear's job: it must cast under autocast as F.linear
    _check_dtypes(x, (("residual", residual, tuple(x.shape[:-1]) + (weight.shape[0],)),), True)
    call = dispatch.LinearCall("linear", x.device.type, x.dtype, _needs_grad(x, weight, bias, residual),
                               weight.shape[1], weight.shape[0], None, bias is not None, residual is not None)
    return call, (x, weight, bias, residual)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           residual: Optional[torch.Tensor] = None, backend: Optional[str] = None) -> torch.Tensor:
    """`[residual +] x @ weight^T + bias`: a projection and, optionally, the residual add after it.

    On the cpp backend, fp32 inference (nothing requires grad, no autocast, no tracing) runs a
    oneDNN GEMM on a prepacked weight with the add in its epilogue; otherwise the reference.

    Args:
        x: [..., in_features]; weight: [out_features, in_features]; bias: [out_features] or None.
        residual: [..., out_features] (x's dtype) or None.
        backend: run this call on this backend instead of the thread's choice.

    Returns:
        [..., out_features].
    """
    call, args = _linear(x, weight, bias, residual)
    return dispatch.run(call, backend, *args)


def _conv1x1(x, weight, bias=None, gelu=None, residual=None):
    checks.tensor("x", x, 4, "[B, C, H, W]")
    checks.tensor("weight", weight, 4, "[out_channels, in_channels, 1, 1]")
    if weight.shape[1:] != (x.shape[1], 1, 1):
        raise ValueError(f"weight must have shape [out_channels, {x.shape[1]}, 1, 1] for x of shape "
                         f"{tuple(x.shape)}, got {tuple(weight.shape)}")
    _check_dtypes(x, (("weight", weight, tuple(weight.shape)), ("bias", bias, (weight.shape[0],))), True)
    if gelu is not None and gelu not in _GELU_FORMS:
        raise ValueError(f"gelu must be None or one of {_GELU_FORMS}, got {gelu!r}")
    if gelu is not None and residual is not None:
        raise ValueError("conv1x1 takes gelu or residual, not both")
    _check_dtypes(x, (("residual", residual, (x.shape[0], weight.shape[0]) + tuple(x.shape[2:])),), True)
    call = dispatch.LinearCall("conv1x1", x.device.type, x.dtype, _needs_grad(x, weight, bias, residual),
                               weight.shape[1], weight.shape[0], gelu, bias is not None, residual is not None)
    return call, (x, weight, bias, gelu, residual)


def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, gelu: Optional[str] = None,
            residual: Optional[torch.Tensor] = None, backend: Optional[str] = None) -> torch.Tensor:
    """`[residual +] act(conv2d(x, weight, bias))` for a 1x1 convolution on an NCHW map.

    Args:
        x: [B, in_channels, H, W]; weight: [out_channels, in_channels, 1, 1]; bias: [out_channels] or None.
        gelu: None (no activation), or GELU after the conv in the form "none" (erf) or "tanh".
        residual: [B, out_channels, H, W] (x's dtype) or None; not together with `gelu`.
        backend: run this call on this backend instead of the thread's choice.

    Returns:
        [B, out_channels, H, W]. On the cpp backend fp32 inference runs oneDNN with a prepacked weight
        and the activation or add in the conv's epilogue.
    """
    call, args = _conv1x1(x, weight, bias, gelu, residual)
    return dispatch.run(call, backend, *args)


# `_<op>(*args, **kwargs) -> (call, the reference's arguments)` for every op of the contract
_DESCRIBERS: Dict[str, Callable] = {name: globals()[f"_{name}"] for name in contract.OPS}


def describe(op: str, *args, **kwargs) -> dispatch.Call:
    """The `dispatch.Call` that `fastwin.ops.<op>(*args, **kwargs)` would be dispatched with (validates
    the arguments, runs nothing). `dispatch.select(describe(...))[0]` names the backend that would run it."""
    if op not in _DESCRIBERS:
        raise ValueError(f"op must be one of {tuple(_DESCRIBERS)}, got {op!r}")
    kwargs.pop("backend", None)
    return _DESCRIBERS[op](*args, **kwargs)[0]


def arguments(op: str, *args, **kwargs) -> tuple:
    """The argument tuple `fastwin.ops.<op>(*args, **kwargs)` would hand its backend, in the order of the
    op's contract row (`fastwin.contract`: the schema's arguments, then the reference-only ones)."""
    if op not in _DESCRIBERS:
        raise ValueError(f"op must be one of {tuple(_DESCRIBERS)}, got {op!r}")
    kwargs.pop("backend", None)
    return _DESCRIBERS[op](*args, **kwargs)[1]


# torch.fx: every op is one leaf call (`call_function`) in a traced graph; its checks and dispatch run
# when the graph runs, on real tensors. `wrap` patches this module's globals while tracing, so calls
# spelled `ops.<op>(...)` (or `fastwin.ops.<op>`) are captured.
for _op in contract.OPS:
    torch.fx.wrap(_op)
