"""torch.library registration of the Triton depthwise-conv ops (the `triton` backend's dwconv half).

Ops (schemas inferred from the annotated signatures below):
    fastwin::dwconv2d_fwd(x, weight, bias?, residual, layout) -> y
    fastwin::dwconv2d_bwd(grad, x, weight, residual, layout) -> (grad_x, grad_weight, grad_bias)
    fastwin::dwconv_layernorm_fwd(x, weight, bias?, ln_weight?, ln_bias?, eps, layout)
        -> (tokens, normed, mean, rstd)
    fastwin::dwconv_layernorm_bwd(grad_tokens?, grad_normed?, x, weight, ln_weight?, tokens, mean, rstd,
        layout) -> (grad_x, grad_weight, grad_bias, grad_ln_weight, grad_ln_bias)
with autograd from `register_autograd`. On a GPU they are `torch.library.triton_op`s launching through
`wrap_triton`, so `torch.compile(fullgraph=True)` traces into the kernels.

Under TRITON_INTERPRET=1 (CPU tests) `wrap_triton` hands back the raw interpreted kernel, which would
then execute on FakeTensors during opcheck / tracing and crash. There the ops are plain
`torch.library.custom_op`s that call the kernels directly, with a fake implementation that is the
same launcher with the launches skipped (so the fake and real output metadata cannot diverge).

`IMPLS` / `SUPPORTS` are what `fastwin.backend.triton_backend` collects; arguments arrive validated
by `fastwin.ops`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import dwconv as _dw
from . import dwconv_layernorm as _dwln

Tensor = torch.Tensor

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_LAYOUTS = ("NCHW", "NHWC")


class _SkipLaunch:
    """`launch` for fake implementations: allocation only, no kernel."""

    def __init__(self, kernel):
        pass

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def _direct(kernel):
    return kernel


def _define(name: str, factory):
    """Register `factory(launch)` as op `name` (triton_op on GPU, custom_op + fake under the interpreter)."""
    if _dw._INTERPRET:
        op = torch.library.custom_op(name, mutates_args=())(factory(_direct))
        op.register_fake(factory(_SkipLaunch))
        return op
    return torch.library.triton_op(name, mutates_args=())(factory(torch.library.wrap_triton))


# ----------------------------------------------------------------------------------------------
# Ops
# ----------------------------------------------------------------------------------------------
def _dwconv2d_fwd_factory(launch):
    def dwconv2d_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], residual: bool, layout: str) -> Tensor:
        return _dw.dwconv2d_fwd_triton(x, weight, bias, residual, layout, launch=launch)

    return dwconv2d_fwd


def _dwconv2d_bwd_factory(launch):
    def dwconv2d_bwd(grad: Tensor, x: Tensor, weight: Tensor, residual: bool, layout: str) -> Tuple[Tensor, Tensor, Tensor]:
        return _dw.dwconv2d_bwd_triton(grad, x, weight, residual, layout, launch=launch)

    return dwconv2d_bwd


def _dwconv_layernorm_fwd_factory(launch):
    def dwconv_layernorm_fwd(
        x: Tensor, weight: Tensor, bias: Optional[Tensor], ln_weight: Optional[Tensor], ln_bias: Optional[Tensor],
        eps: float, layout: str,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        return _dwln.dwconv_layernorm_fwd_triton(x, weight, bias, ln_weight, ln_bias, eps, layout, launch=launch)

    return dwconv_layernorm_fwd


def _dwconv_layernorm_bwd_factory(launch):
    def dwconv_layernorm_bwd(
        grad_tokens: Optional[Tensor], grad_normed: Optional[Tensor], x: Tensor, weight: Tensor,
        ln_weight: Optional[Tensor], tokens: Tensor, mean: Tensor, rstd: Tensor, layout: str,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return _dwln.dwconv_layernorm_bwd_triton(grad_tokens, grad_normed, x, weight, ln_weight, tokens, mean, rstd,
                                                 layout, launch=launch)

    return dwconv_layernorm_bwd


dwconv2d_fwd = _define("fastwin::dwconv2d_fwd", _dwconv2d_fwd_factory)
dwconv2d_bwd = _define("fastwin::dwconv2d_bwd", _dwconv2d_bwd_factory)
dwconv_layernorm_fwd = _define("fastwin::dwconv_layernorm_fwd", _dwconv_layernorm_fwd_factory)
dwconv_layernorm_bwd = _define("fastwin::dwconv_layernorm_bwd", _dwconv_layernorm_bwd_factory)


# ----------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------
def _dwconv2d_setup(ctx, inputs, output):
    x, weight, bias, residual, layout = inputs
    ctx.save_for_backward(x, weight)
    ctx.residual, ctx.layout, ctx.has_bias = residual, layout, bias is not None


def _dwconv2d_backward(ctx, grad):
    x, weight = ctx.saved_tensors
    grad_x, grad_w, grad_b = torch.ops.fastwin.dwconv2d_bwd(grad, x, weight, ctx.residual, ctx.layout)
    return grad_x, grad_w, grad_b if ctx.has_bias else None, None, None


def _dwconv_layernorm_setup(ctx, inputs, output):
    x, weight, bias, ln_weight, ln_bias, eps, layout = inputs
    tokens, _, mean, rstd = output
    ctx.save_for_backward(x, weight, ln_weight, tokens, mean, rstd)
    ctx.layout = layout
    ctx.has = (bias is not None, ln_weight is not None, ln_bias is not None)


def _dwconv_layernorm_backward(ctx, grad_tokens, grad_normed, _grad_mean, _grad_rstd):
    x, weight, ln_weight, tokens, mean, rstd = ctx.saved_tensors
    grad_x, grad_w, grad_b, grad_lnw, grad_lnb = torch.ops.fastwin.dwconv_layernorm_bwd(
        grad_tokens, grad_normed, x, weight, ln_weight, tokens, mean, rstd, ctx.layout
    )
    has_bias, has_lnw, has_lnb = ctx.has
    return (grad_x, grad_w, grad_b if has_bias else None, grad_lnw if has_lnw else None,
            grad_lnb if has_lnb else None, None, None)


dwconv2d_fwd.register_autograd(_dwconv2d_backward, setup_context=_dwconv2d_setup)
dwconv_layernorm_fwd.register_autograd(_dwconv_layernorm_backward, setup_context=_dwconv_layernorm_setup)


# ----------------------------------------------------------------------------------------------
# Backend entry points (reference signatures)
# ----------------------------------------------------------------------------------------------
def dwconv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, residual: bool = False,
             layout: str = "NCHW") -> Tensor:
    """Triton `fastwin.reference.dwconv2d_ref`."""
    return torch.ops.fastwin.dwconv2d_fwd(x, weight, bias, residual, layout)


def dwconv_layernorm(x: Tensor, weight: Tensor, bias: Optional[Tensor], ln_weight: Optional[Tensor],
                     ln_bias: Optional[Tensor], eps: float = 1e-6, layout: str = "NCHW"):
    """Triton `fastwin.reference.dwconv_layernorm_ref`: (tokens, normed), both [B, H*W, C].

    Channel counts above `dwconv_layernorm.MAX_CHANNELS` (whose full-C tile would not fit in
    registers) run the Triton conv op followed by torch's LayerNorm.
    """
    channels = x.shape[1] if layout == "NCHW" else x.shape[3]
    if channels > _dwln.MAX_CHANNELS:
        y = dwconv2d(x, weight, bias, True, layout)
        tokens = y.flatten(2).transpose(1, 2) if layout == "NCHW" else y.flatten(1, 2)
        return tokens, F.layer_norm(tokens, (channels,), ln_weight, ln_bias, eps)
    tokens, normed, _, _ = torch.ops.fastwin.dwconv_layernorm_fwd(x, weight, bias, ln_weight, ln_bias, eps, layout)
    return tokens, normed


def _supports(call) -> Optional[str]:
    k = call.param("kernel_size")
    if not isinstance(k, int) or k % 2 == 0 or not 1 <= k <= _dw.MAX_KERNEL:
        return f"kernel_size must be odd and at most {_dw.MAX_KERNEL}, got {k}"
    if call.dtype not in _DTYPES:
        return f"dtype {call.dtype} is not supported (float16, bfloat16, float32)"
    if call.param("layout", "NCHW") not in _LAYOUTS:
        return f"layout {call.param('layout')!r} is not one of {_LAYOUTS}"
    if call.device.type == "cuda" and call.dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return "bfloat16 needs a GPU with compute capability >= 8.0"
    return None


def _supports_layernorm(call) -> Optional[str]:
    channels = call.param("channels")
    if channels is not None and channels > _dwln.MAX_CHANNELS:
        return f"{channels} channels exceed the fused kernel's full-C tile ({_dwln.MAX_CHANNELS})"
    return _supports(call)


IMPLS = {"dwconv2d": dwconv2d, "dwconv_layernorm": dwconv_layernorm}
SUPPORTS = {"dwconv2d": _supports, "dwconv_layernorm": _supports_layernorm}
