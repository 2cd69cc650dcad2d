"""torch.library ops, autograd and dispatcher entry points for the fused attention kernels.

Registered ops (`torch.library.triton_op`, so `torch.compile(fullgraph=True)` traces into the
kernels and the fake implementation is derived from the launcher):
    fastwin::shifted_window_attention_fwd / _bwd   partition-free Swin attention on the qkv map
    fastwin::window_attention_fwd / _bwd           given windows, optional [nW, N, N] mask
    fastwin::attention_fwd / _bwd                  global attention
Each forward returns `(out, lse)`; lse (base-2 logsumexp, fp32 [windows, heads, N]) is saved for the
backward, which recomputes the softmax. The additive `mask` of `window_attention` gets no gradient
(it is a constant built from the shift geometry in Swin); its backward returns None for it.

Under TRITON_INTERPRET=1 the same ops run on CPU tensors (the CI path). There `wrap_triton` hands
back the raw interpreted kernel, which cannot be captured into a graph: a `triton_op` would be
decomposed by AOTAutograd into a graph *without* its kernels. So under the interpreter the ops are
registered as opaque `custom_op`s whose fake implementation is the launcher itself (which skips the
launch on fake tensors); on GPUs they are `triton_op`s that torch.compile traces into.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.library import custom_op, triton_op

from . import window_attention as K


def _register(name: str):
    """`triton_op(name)` on GPUs; an opaque `custom_op` with the launcher as fake under the interpreter."""
    def deco(fn):
        if not K._interpreting():
            return triton_op(name, fn, mutates_args=())
        op = custom_op(name, fn, mutates_args=())
        op.register_fake(fn)
        return op
    return deco

_HEAD_DIMS = (16, 32, 64, 128)
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# ---------------------------------------------------------------------------- shifted windows

@_register("fastwin::shifted_window_attention_fwd")
def _shifted_fwd(qkv: Tensor, rel_pos_bias_table: Optional[Tensor], qkv_bias: Optional[Tensor], num_heads: int,
                 window_h: int, window_w: int, shift_h: int, shift_w: int, scale: float,
                 pad_roll: bool) -> Tuple[Tensor, Tensor]:
    geo = K._Geometry(qkv, num_heads, True, (window_h, window_w), (shift_h, shift_w), pad_roll)
    return K.window_attention_fwd_triton(geo, qkv, rel_pos_bias_table, qkv_bias, None, scale)


@_register("fastwin::shifted_window_attention_bwd")
def _shifted_bwd(grad_out: Tensor, qkv: Tensor, rel_pos_bias_table: Optional[Tensor], qkv_bias: Optional[Tensor],
                 out: Tensor, lse: Tensor, num_heads: int, window_h: int, window_w: int, shift_h: int, shift_w: int,
                 scale: float, pad_roll: bool, need_table_grad: bool,
                 need_bias_grad: bool) -> Tuple[Tensor, Tensor, Tensor]:
    geo = K._Geometry(qkv, num_heads, True, (window_h, window_w), (shift_h, shift_w), pad_roll)
    return K.window_attention_bwd_triton(geo, grad_out, qkv, rel_pos_bias_table, qkv_bias, None, out, lse, scale,
                                         need_table_grad, need_bias_grad)


def _shifted_setup(ctx, inputs, output):
    qkv, table, qkv_bias = inputs[:3]
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(qkv, table, qkv_bias, out, lse)
    ctx.args = tuple(inputs[3:])


def _shifted_backward(ctx, grad_out, _grad_lse):
    qkv, table, qkv_bias, out, lse = ctx.saved_tensors
    need = ctx.needs_input_grad
    dqkv, dtable, dbias = torch.ops.fastwin.shifted_window_attention_bwd(
        grad_out, qkv, table, qkv_bias, out, lse, *ctx.args, need[1], need[2])
    return (dqkv if need[0] else None, dtable if need[1] else None, dbias if need[2] else None) + (None,) * 7


torch.library.register_autograd("fastwin::shifted_window_attention_fwd", _shifted_backward, setup_context=_shifted_setup)


# ---------------------------------------------------------------------------- given windows

@_register("fastwin::window_attention_fwd")
def _window_fwd(qkv: Tensor, rel_pos_bias_table: Optional[Tensor], mask: Optional[Tensor], num_heads: int,
                window_h: int, window_w: int, scale: float) -> Tuple[Tensor, Tensor]:
    geo = K._Geometry(qkv, num_heads, False, (window_h, window_w))
    return K.window_attention_fwd_triton(geo, qkv, rel_pos_bias_table, None, mask, scale)


@_register("fastwin::window_attention_bwd")
def _window_bwd(grad_out: Tensor, qkv: Tensor, rel_pos_bias_table: Optional[Tensor], mask: Optional[Tensor],
                out: Tensor, lse: Tensor, num_heads: int, window_h: int, window_w: int, scale: float,
                need_table_grad: bool) -> Tuple[Tensor, Tensor]:
    geo = K._Geometry(qkv, num_heads, False, (window_h, window_w))
    dqkv, dtable, _ = K.window_attention_bwd_triton(geo, grad_out, qkv, rel_pos_bias_table, None, mask, out, lse,
                                                    scale, need_table_grad, False)
    return dqkv, dtable


def _window_setup(ctx, inputs, output):
    qkv, table, mask = inputs[:3]
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(qkv, table, mask, out, lse)
    ctx.args = tuple(inputs[3:])


def _window_backward(ctx, grad_out, _grad_lse):
    qkv, table, mask, out, lse = ctx.saved_tensors
    need = ctx.needs_input_grad
    dqkv, dtable = torch.ops.fastwin.window_attention_bwd(grad_out, qkv, table, mask, out, lse, *ctx.args, need[1])
    # the mask is a constant (Swin's shift mask): no gradient
    return (dqkv if need[0] else None, dtable if need[1] else None, None) + (None,) * 4


torch.library.register_autograd("fastwin::window_attention_fwd", _window_backward, setup_context=_window_setup)


# ---------------------------------------------------------------------------- global attention

@_register("fastwin::attention_fwd")
def _attention_fwd(qkv: Tensor, num_heads: int, scale: float) -> Tuple[Tensor, Tensor]:
    geo = K._Geometry(qkv, num_heads, False, (1, 1))
    return K.window_attention_fwd_triton(geo, qkv, None, None, None, scale)


@_register("fastwin::attention_bwd")
def _attention_bwd(grad_out: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, num_heads: int, scale: float) -> Tensor:
    geo = K._Geometry(qkv, num_heads, False, (1, 1))
    return K.window_attention_bwd_triton(geo, grad_out, qkv, None, None, None, out, lse, scale, False, False)[0]


def _attention_setup(ctx, inputs, output):
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(inputs[0], out, lse)
    ctx.args = tuple(inputs[1:])


def _attention_backward(ctx, grad_out, _grad_lse):
    qkv, out, lse = ctx.saved_tensors
    return torch.ops.fastwin.attention_bwd(grad_out, qkv, out, lse, *ctx.args), None, None


torch.library.register_autograd("fastwin::attention_fwd", _attention_backward, setup_context=_attention_setup)


# ---------------------------------------------------------------------------- dispatcher entry points

def _scale(scale, qkv, num_heads):
    return float(qkv.shape[-1] // (3 * num_heads)) ** -0.5 if scale is None else float(scale)


def shifted_window_attention_triton(qkv, num_heads, window_size, shift_size=(0, 0), rel_pos_bias_table=None,
                                    qkv_bias=None, scale=None, pad_order="roll_pad", dropout_p=0.0):
    """Same signature and result as `fastwin.reference.shifted_window_attention_ref` (dropout_p must be 0)."""
    out, _ = torch.ops.fastwin.shifted_window_attention_fwd(
        qkv, rel_pos_bias_table, qkv_bias, num_heads, int(window_size[0]), int(window_size[1]),
        int(shift_size[0]), int(shift_size[1]), _scale(scale, qkv, num_heads), pad_order == "pad_roll")
    return out


def window_attention_triton(qkv, num_heads, window_size, rel_pos_bias_table=None, mask=None, scale=None,
                            dropout_p=0.0):
    """Same signature and result as `fastwin.reference.window_attention_ref` (dropout_p must be 0)."""
    out, _ = torch.ops.fastwin.window_attention_fwd(
        qkv, rel_pos_bias_table, mask, num_heads, int(window_size[0]), int(window_size[1]),
        _scale(scale, qkv, num_heads))
    return out


def attention_triton(qkv, num_heads, scale=None, dropout_p=0.0):
    """Same signature and result as `fastwin.reference.attention_ref` (dropout_p must be 0)."""
    out, _ = torch.ops.fastwin.attention_fwd(qkv, num_heads, _scale(scale, qkv, num_heads))
    return out


def _common_reason(call) -> Optional[str]:
    if call.param("dropout_p", 0.0) > 0:
        return "attention dropout is not implemented in the Triton kernels"
    if call.dtype not in _DTYPES:
        return f"dtype {call.dtype} is not supported (float16, bfloat16, float32)"
    if call.dtype == torch.bfloat16 and call.device.type == "cpu":
        return "bfloat16 tl.dot is broken in the Triton CPU interpreter"
    d = call.param("head_dim")
    if d not in _HEAD_DIMS:
        return f"head_dim {d} is not supported (one of {_HEAD_DIMS})"
    return None


def _window_reason(call) -> Optional[str]:
    reason = _common_reason(call)
    if reason is None:
        wh, ww = call.param("window_size")
        n = wh * ww
        if n > K.MAX_WINDOW_TOKENS:
            reason = f"window {wh}x{ww} has {n} tokens, more than {K.MAX_WINDOW_TOKENS}"
        elif 2 * K._np2(n) * call.param("head_dim") * call.dtype.itemsize > K.MAX_KEY_BLOCK_BYTES:
            reason = (f"window {wh}x{ww} with head_dim {call.param('head_dim')} in {call.dtype} needs k/v tiles "
                      f"larger than {K.MAX_KEY_BLOCK_BYTES} bytes")
    return reason


IMPLS = {
    "shifted_window_attention": shifted_window_attention_triton,
    "window_attention": window_attention_triton,
    "attention": attention_triton,
}

SUPPORTS = {
    "shifted_window_attention": _window_reason,
    "window_attention": _window_reason,
    "attention": _common_reason,
}
