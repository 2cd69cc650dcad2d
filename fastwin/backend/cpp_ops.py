"""Python side of the C++ ops `fastwin_C::<op>_fwd / _bwd` (schemas in csrc/ops.cpp): their fake
(meta) kernels, so torch.compile can trace them, and the shared autograd (`library.register_autograd`).

`register()` runs once, as soon as `fastwin._C` is loaded (at `import fastwin`, or after a JIT build).
"""
from __future__ import annotations

import torch

from . import library

NAMESPACE = "fastwin_C"
_done = []


def _stat_dtype(t):
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _ceil_to(x, m):
    return (x + m - 1) // m * m


def _grad_like(t, need):
    """A gradient's fake: t's shape where requested and t exists, else the [0]-sized placeholder."""
    return t.new_empty(t.shape) if (t is not None and need) else torch.empty(0)


def _conv_format(x):
    """The memory format the conv kernels produce for input x (mirrors csrc/*/dwconv*)."""
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def _register_fakes():
    lib = NAMESPACE + "::"

    @torch.library.register_fake(lib + "shifted_window_attention_fwd")
    def _(qkv, table, qkv_bias, num_heads, window_size, shift_size, scale, pad_roll):
        B, H, W, C3 = qkv.shape
        wh, ww = window_size
        groups = B * (_ceil_to(H, wh) // wh) * (_ceil_to(W, ww) // ww)
        return qkv.new_empty((B, H, W, C3 // 3)), qkv.new_empty((groups, num_heads, wh * ww), dtype=_stat_dtype(qkv))

    @torch.library.register_fake(lib + "shifted_window_attention_bwd")
    def _(grad_out, out, lse, qkv, table, qkv_bias, num_heads, window_size, shift_size, scale, pad_roll, needs):
        return qkv.new_empty(qkv.shape), _grad_like(table, needs[1]).to(qkv), _grad_like(qkv_bias, needs[2]).to(qkv)

    @torch.library.register_fake(lib + "window_attention_fwd")
    def _(qkv, table, mask, num_heads, window_size, scale):
        B_, N, C3 = qkv.shape
        return qkv.new_empty((B_, N, C3 // 3)), qkv.new_empty((B_, num_heads, N), dtype=_stat_dtype(qkv))

    @torch.library.register_fake(lib + "window_attention_bwd")
    def _(grad_out, out, lse, qkv, table, mask, num_heads, window_size, scale, needs):
        return qkv.new_empty(qkv.shape), _grad_like(table, needs[1]).to(qkv), _grad_like(mask, needs[2]).to(qkv)

    @torch.library.register_fake(lib + "attention_fwd")
    def _(qkv, num_heads, scale):
        B, N, C3 = qkv.shape
        return qkv.new_empty((B, N, C3 // 3)), qkv.new_empty((B, num_heads, N), dtype=_stat_dtype(qkv))

    @torch.library.register_fake(lib + "attention_bwd")
    def _(grad_out, out, lse, qkv, num_heads, scale, needs):
        return qkv.new_empty(qkv.shape)

    @torch.library.register_fake(lib + "dwconv2d_fwd")
    def _(x, weight, bias, residual, layout):
        xl = x.permute(0, 3, 1, 2) if layout == "NHWC" else x
        y = torch.empty_like(xl, memory_format=_conv_format(xl))
        return y.permute(0, 2, 3, 1) if layout == "NHWC" else y

    @torch.library.register_fake(lib + "dwconv2d_bwd")
    def _(grad_out, x, weight, bias, residual, layout, needs):
        gl = grad_out.permute(0, 3, 1, 2) if layout == "NHWC" else grad_out
        dx = torch.empty_like(gl, memory_format=_conv_format(gl))
        dx = dx.permute(0, 2, 3, 1) if layout == "NHWC" else dx
        return dx, _grad_like(weight, needs[1]).to(x), _grad_like(bias, needs[2]).to(x)


def _register_linear_fakes():
    lib = NAMESPACE + "::"

    @torch.library.register_fake(lib + "linear_gelu_fwd")
    def _(x, weight, bias, approximate, save_preact):
        shape = (*x.shape[:-1], weight.shape[0])
        return x.new_empty(shape), x.new_empty(shape if save_preact else (0,))

    @torch.library.register_fake(lib + "linear_gelu_bwd")
    def _(grad_out, preact, x, weight, bias, approximate, save_preact, needs):
        return (_grad_like(x, needs[0]).to(x), _grad_like(weight, needs[1]).to(x),
                _grad_like(bias, needs[2]).to(x))


def register() -> None:
    """Fake kernels + autograd for the fastwin_C ops; idempotent; call after `fastwin._C` loaded."""
    if not _done:
        _done.append(True)
        _register_fakes()
        if library._has_op(NAMESPACE, "linear_gelu_fwd"):  # a JIT build of older sources may lack it
            _register_linear_fakes()
        library.register_autograd(NAMESPACE)
