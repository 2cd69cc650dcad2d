"""fastwin._C CPU kernels backend (ops `torch.ops.fastwin_C.*`, schemas in csrc/ops.cpp).

This module also registers, once, the Python side of those ops for every device: fake (meta)
kernels so `torch.compile` can trace them, and autograd formulas built on the `*_bwd` ops. The
`cuda` backend reuses `IMPLS`; the dispatcher routes each call to the CPU or CUDA kernels by device.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .. import _extension

NAME = "cpp"

_registered = []


def _ops():
    return torch.ops.fastwin_C


def _stat_dtype(t):
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _ceil_to(x, m):
    return (x + m - 1) // m * m


def _empty0(t):
    return t.new_empty((0,))


def _register_fakes():
    lib = "fastwin_C::"

    @torch.library.register_fake(lib + "swin_attn_fwd")
    def _(qkv, num_heads, window_size, shift_size, table, qkv_bias, scale, pad_roll):
        B, H, W, C3 = qkv.shape
        wh, ww = window_size
        groups = B * (_ceil_to(H, wh) // wh) * (_ceil_to(W, ww) // ww)
        return qkv.new_empty((B, H, W, C3 // 3)), qkv.new_empty((groups, num_heads, wh * ww), dtype=_stat_dtype(qkv))

    @torch.library.register_fake(lib + "swin_attn_bwd")
    def _(grad_out, qkv, out, lse, num_heads, window_size, shift_size, table, qkv_bias, scale, pad_roll):
        return (qkv.new_empty(qkv.shape), _empty0(qkv) if table is None else table.new_empty(table.shape),
                _empty0(qkv) if qkv_bias is None else qkv_bias.new_empty(qkv_bias.shape))

    @torch.library.register_fake(lib + "win_attn_fwd")
    def _(qkv, num_heads, window_size, table, mask, scale):
        B_, N, C3 = qkv.shape
        return qkv.new_empty((B_, N, C3 // 3)), qkv.new_empty((B_, num_heads, N), dtype=_stat_dtype(qkv))

    @torch.library.register_fake(lib + "win_attn_bwd")
    def _(grad_out, qkv, out, lse, num_heads, window_size, table, mask, scale, mask_grad):
        return (qkv.new_empty(qkv.shape), _empty0(qkv) if table is None else table.new_empty(table.shape),
                mask.new_empty(mask.shape) if (mask is not None and mask_grad) else _empty0(qkv))

    @torch.library.register_fake(lib + "attn_fwd")
    def _(qkv, num_heads, scale):
        B, N, C3 = qkv.shape
        return qkv.new_empty((B, N, C3 // 3)), qkv.new_empty((B, num_heads, N), dtype=_stat_dtype(qkv))

    @torch.library.register_fake(lib + "attn_bwd")
    def _(grad_out, qkv, out, lse, num_heads, scale):
        return qkv.new_empty(qkv.shape)

    @torch.library.register_fake(lib + "dwconv2d_fwd")
    def _(x, weight, bias, residual):
        return torch.empty_like(x, memory_format=_conv_format(x))

    @torch.library.register_fake(lib + "dwconv2d_bwd")
    def _(grad_out, x, weight, residual, bias_grad):
        return (torch.empty_like(grad_out, memory_format=_conv_format(grad_out)), weight.new_empty(weight.shape),
                x.new_empty((x.shape[1],)) if bias_grad else _empty0(x))


def _conv_format(x):
    """The memory format the conv kernels produce for input x (mirrors csrc/*/dwconv*)."""
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def _register_autograd():
    ops = _ops()

    def swin_setup(ctx, inputs, output):
        qkv, heads, window, shift, table, qkv_bias, scale, pad_roll = inputs
        ctx.save_for_backward(qkv, output[0], output[1], table, qkv_bias)
        ctx.args = (heads, window, shift, scale, pad_roll)

    def swin_backward(ctx, grad_out, _grad_lse):
        qkv, out, lse, table, qkv_bias = ctx.saved_tensors
        heads, window, shift, scale, pad_roll = ctx.args
        dqkv, dtable, dqb = ops.swin_attn_bwd(grad_out, qkv, out, lse, heads, window, shift, table, qkv_bias,
                                              scale, pad_roll)
        return (dqkv, None, None, None, dtable if table is not None else None,
                dqb if qkv_bias is not None else None, None, None)

    def win_setup(ctx, inputs, output):
        qkv, heads, window, table, mask, scale = inputs
        ctx.save_for_backward(qkv, output[0], output[1], table, mask)
        ctx.args = (heads, window, scale)

    def win_backward(ctx, grad_out, _grad_lse):
        qkv, out, lse, table, mask = ctx.saved_tensors
        heads, window, scale = ctx.args
        mask_grad = mask is not None and ctx.needs_input_grad[4]
        dqkv, dtable, dmask = ops.win_attn_bwd(grad_out, qkv, out, lse, heads, window, table, mask, scale, mask_grad)
        return (dqkv, None, None, dtable if table is not None else None, dmask if mask_grad else None, None)

    def attn_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output[0], output[1])
        ctx.args = (inputs[1], inputs[2])

    def attn_backward(ctx, grad_out, _grad_lse):
        qkv, out, lse = ctx.saved_tensors
        return ops.attn_bwd(grad_out, qkv, out, lse, *ctx.args), None, None

    def conv_setup(ctx, inputs, output):
        x, weight, bias, residual = inputs
        ctx.save_for_backward(x, weight)
        ctx.args = (residual, bias is not None)

    def conv_backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        residual, has_bias = ctx.args
        dx, dw, db = ops.dwconv2d_bwd(grad_out, x, weight, residual, has_bias)
        return dx, dw, db if has_bias else None, None

    torch.library.register_autograd("fastwin_C::swin_attn_fwd", swin_backward, setup_context=swin_setup)
    torch.library.register_autograd("fastwin_C::win_attn_fwd", win_backward, setup_context=win_setup)
    torch.library.register_autograd("fastwin_C::attn_fwd", attn_backward, setup_context=attn_setup)
    torch.library.register_autograd("fastwin_C::dwconv2d_fwd", conv_backward, setup_context=conv_setup)


def register_python_side() -> None:
    """Fake kernels + autograd for the fastwin_C ops; idempotent, call after the library loaded."""
    if not _registered:
        _registered.append(True)
        _register_fakes()
        _register_autograd()


# ---- implementations with the reference functions' signatures -------------------------------------


def shifted_window_attention(qkv, num_heads, window_size, shift_size=(0, 0), rel_pos_bias_table=None,
                             qkv_bias=None, scale=None, pad_order="roll_pad", dropout_p=0.0):
    d = qkv.shape[-1] // (3 * num_heads)
    scale = d ** -0.5 if scale is None else float(scale)
    out, _ = _ops().swin_attn_fwd(qkv, num_heads, list(window_size), list(shift_size), rel_pos_bias_table, qkv_bias,
                                  scale, pad_order == "pad_roll")
    return out


def window_attention(qkv, num_heads, window_size, rel_pos_bias_table=None, mask=None, scale=None, dropout_p=0.0):
    d = qkv.shape[-1] // (3 * num_heads)
    scale = d ** -0.5 if scale is None else float(scale)
    if mask is not None and mask.dtype != qkv.dtype:
        mask = mask.to(qkv.dtype)  # the reference adds the mask in qkv's dtype too
    out, _ = _ops().win_attn_fwd(qkv, num_heads, list(window_size), rel_pos_bias_table, mask, scale)
    return out


def attention(qkv, num_heads, scale=None, dropout_p=0.0):
    d = qkv.shape[-1] // (3 * num_heads)
    out, _ = _ops().attn_fwd(qkv, num_heads, d ** -0.5 if scale is None else float(scale))
    return out


def dwconv2d(x, weight, bias=None, residual=False, layout="NCHW"):
    if layout == "NHWC":  # the kernels take logical NCHW; this view is channels-last in memory
        return _ops().dwconv2d_fwd(x.permute(0, 3, 1, 2), weight, bias, residual).permute(0, 2, 3, 1)
    return _ops().dwconv2d_fwd(x, weight, bias, residual)


def dwconv_layernorm(x, weight, bias, ln_weight, ln_bias, eps=1e-6, layout="NCHW"):
    y = dwconv2d(x, weight, bias, residual=True, layout=layout)
    tokens = y.flatten(2).transpose(1, 2) if layout == "NCHW" else y.flatten(1, 2)
    return tokens, F.layer_norm(tokens, (tokens.shape[-1],), ln_weight, ln_bias, eps)


IMPLS = {
    "shifted_window_attention": shifted_window_attention,
    "window_attention": window_attention,
    "attention": attention,
    "dwconv2d": dwconv2d,
    "dwconv_layernorm": dwconv_layernorm,
}

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def available() -> Optional[str]:
    reason = _extension.load_cpu()
    if reason is None:
        register_python_side()
    return reason


def common_refusal(call) -> Optional[str]:
    """Limits shared by the CPU and CUDA kernels."""
    if call.param("dropout_p", 0.0) > 0:
        return f"attention dropout is not implemented (dropout_p={call.param('dropout_p')})"
    return None


def supports(call) -> Optional[str]:
    if call.device.type != "cpu":
        return f"the cpp backend runs on CPU tensors, got {call.device.type}"
    if call.dtype not in SUPPORTED_DTYPES:
        return f"dtype {call.dtype} is not supported"
    return common_refusal(call)
