"""The Triton ops `fastwin::<op>_fwd / _bwd` (contract in `fastwin.backend.library`).

Each op body only unpacks arguments and calls the launchers in `fastwin.kernels.triton`; autograd
comes from the shared table (`library.register_autograd("fastwin")`).

On GPUs the ops are `torch.library.triton_op`s launching through `wrap_triton`, so
`torch.compile(fullgraph=True)` traces into the kernels and the fake implementation is derived from
the launcher. Under TRITON_INTERPRET=1 (CPU tests) nothing needs tracing and `wrap_triton` is not
used at all (torch <= 2.12 rejects interpreted kernels; newer torch hands them back unwrapped, and
they cannot run on fake tensors); there the ops are opaque `custom_op`s launching the kernels
directly, whose fake is the same body with the launches skipped, so fake and real output metadata
cannot diverge.

Importing this module registers the ops; `fastwin.backend` does that at `import fastwin` when triton
is importable and a GPU (or the interpreter) can run it.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..kernels.triton import dwconv as _dw
from ..kernels.triton import dwconv_layernorm as _dwln
from ..kernels.triton import interpreting
from ..kernels.triton import window_attention as _wa

NAMESPACE = "fastwin"


class _SkipLaunch:
    """`launch(kernel)[grid](...)` that only allocates (for fake implementations)."""

    def __init__(self, kernel):
        pass

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def _identity(kernel):
    return kernel


def _define(name: str, factory):
    """Register `factory(launch)` as `fastwin::<name>` (triton_op on GPU; custom_op + fake in the interpreter)."""
    qualname = f"{NAMESPACE}::{name}"
    if interpreting():
        op = torch.library.custom_op(qualname, mutates_args=())(factory(_identity))
        op.register_fake(factory(_SkipLaunch))
        return op
    return torch.library.triton_op(qualname, mutates_args=())(factory(torch.library.wrap_triton))


# ---------------------------------------------------------------------------------------------- attention
# The window-attention launchers skip their launches on fake tensors themselves, so `launch` is unused.

def _shifted_fwd(launch):
    def shifted_window_attention_fwd(qkv: Tensor, rel_pos_bias_table: Optional[Tensor], qkv_bias: Optional[Tensor],
                                     num_heads: int, window_size: List[int], shift_size: List[int], scale: float,
                                     pad_roll: bool) -> Tuple[Tensor, Tensor]:
        geo = _wa._Geometry(qkv, num_heads, True, tuple(window_size), tuple(shift_size), pad_roll)
        return _wa.window_attention_fwd_triton(geo, qkv, rel_pos_bias_table, qkv_bias, None, scale)

    return shifted_window_attention_fwd


def _shifted_bwd(launch):
    def shifted_window_attention_bwd(grad_out: Tensor, out: Tensor, lse: Tensor, qkv: Tensor,
                                     rel_pos_bias_table: Optional[Tensor], qkv_bias: Optional[Tensor], num_heads: int,
                                     window_size: List[int], shift_size: List[int], scale: float, pad_roll: bool,
                                     needs_grad: List[bool]) -> Tuple[Tensor, Tensor, Tensor]:
        geo = _wa._Geometry(qkv, num_heads, True, tuple(window_size), tuple(shift_size), pad_roll)
        dqkv, dtable, dbias, _ = _wa.window_attention_bwd_triton(
            geo, grad_out, qkv, rel_pos_bias_table, qkv_bias, None, out, lse, scale,
            bool(needs_grad[1]), bool(needs_grad[2]) and geo.padded, False)
        # without padding no token carries qkv_bias: no gradient, like the reference
        return dqkv, dtable, dbias if geo.padded else qkv.new_empty(0)

    return shifted_window_attention_bwd


def _window_fwd(launch):
    def window_attention_fwd(qkv: Tensor, rel_pos_bias_table: Optional[Tensor], mask: Optional[Tensor],
                             num_heads: int, window_size: List[int], scale: float) -> Tuple[Tensor, Tensor]:
        geo = _wa._Geometry(qkv, num_heads, False, tuple(window_size))
        return _wa.window_attention_fwd_triton(geo, qkv, rel_pos_bias_table, None, mask, scale)

    return window_attention_fwd


def _window_bwd(launch):
    def window_attention_bwd(grad_out: Tensor, out: Tensor, lse: Tensor, qkv: Tensor,
                             rel_pos_bias_table: Optional[Tensor], mask: Optional[Tensor], num_heads: int,
                             window_size: List[int], scale: float,
                             needs_grad: List[bool]) -> Tuple[Tensor, Tensor, Tensor]:
        geo = _wa._Geometry(qkv, num_heads, False, tuple(window_size))
        dqkv, dtable, _, dmask = _wa.window_attention_bwd_triton(
            geo, grad_out, qkv, rel_pos_bias_table, None, mask, out, lse, scale,
            bool(needs_grad[1]), False, bool(needs_grad[2]))
        return dqkv, dtable, dmask

    return window_attention_bwd


def _attention_fwd(launch):
    def attention_fwd(qkv: Tensor, num_heads: int, scale: float) -> Tuple[Tensor, Tensor]:
        geo = _wa._Geometry(qkv, num_heads, False, (1, 1))
        return _wa.window_attention_fwd_triton(geo, qkv, None, None, None, scale)

    return attention_fwd


def _attention_bwd(launch):
    def attention_bwd(grad_out: Tensor, out: Tensor, lse: Tensor, qkv: Tensor, num_heads: int, scale: float,
                      needs_grad: List[bool]) -> Tensor:
        geo = _wa._Geometry(qkv, num_heads, False, (1, 1))
        return _wa.window_attention_bwd_triton(geo, grad_out, qkv, None, None, None, out, lse, scale,
                                               False, False, False)[0]

    return attention_bwd


# ----------------------------------------------------------------------------------------- depthwise conv

def _dwconv2d_fwd(launch):
    def dwconv2d_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], residual: bool, layout: str) -> Tensor:
        return _dw.dwconv2d_fwd_triton(x, weight, bias, residual, layout, launch=launch)

    return dwconv2d_fwd


def _dwconv2d_bwd(launch):
    def dwconv2d_bwd(grad_out: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor], residual: bool, layout: str,
                     needs_grad: List[bool]) -> Tuple[Tensor, Tensor, Tensor]:
        # the bias gradient is one extra row of the weight reduction: computed whenever the weight's is
        return _dw.dwconv2d_bwd_triton(grad_out, x, weight, residual, layout, launch=launch)

    return dwconv2d_bwd


def _dwconv_layernorm_fwd(launch):
    def dwconv_layernorm_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], ln_weight: Optional[Tensor],
                             ln_bias: Optional[Tensor], eps: float,
                             layout: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        return _dwln.dwconv_layernorm_fwd_triton(x, weight, bias, ln_weight, ln_bias, eps, layout, launch=launch)

    return dwconv_layernorm_fwd


def _dwconv_layernorm_bwd(launch):
    def dwconv_layernorm_bwd(grad_tokens: Tensor, grad_normed: Tensor, tokens: Tensor, mean: Tensor, rstd: Tensor,
                             x: Tensor, weight: Tensor, bias: Optional[Tensor], ln_weight: Optional[Tensor],
                             ln_bias: Optional[Tensor], eps: float, layout: str,
                             needs_grad: List[bool]) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return _dwln.dwconv_layernorm_bwd_triton(grad_tokens, grad_normed, x, weight, ln_weight, tokens, mean, rstd,
                                                 layout, launch=launch)

    return dwconv_layernorm_bwd


OPS = {
    name: _define(name, factory)
    for name, factory in (
        ("shifted_window_attention_fwd", _shifted_fwd), ("shifted_window_attention_bwd", _shifted_bwd),
        ("window_attention_fwd", _window_fwd), ("window_attention_bwd", _window_bwd),
        ("attention_fwd", _attention_fwd), ("attention_bwd", _attention_bwd),
        ("dwconv2d_fwd", _dwconv2d_fwd), ("dwconv2d_bwd", _dwconv2d_bwd),
        ("dwconv_layernorm_fwd", _dwconv_layernorm_fwd), ("dwconv_layernorm_bwd", _dwconv_layernorm_bwd),
    )
}
