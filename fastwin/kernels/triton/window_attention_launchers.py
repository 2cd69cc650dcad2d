"""Launchers of the window-attention kernels (`window_attention.py`), one per op of the contract.

Each `<op>_fwd_triton` / `<op>_bwd_triton` takes the arguments of `fastwin::<op>_fwd / _bwd` in the
schema's order (`fastwin.contract`), builds the kernels' geometry from them, allocates and launches
(`launch.run`, which skips launches on fake tensors); `fastwin.backend.triton_ops` registers them as
the ops as they are. Arguments arrive validated by `fastwin.ops`.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import triton
from torch import Tensor

from . import interpreting, launch
from .window_attention import (
    _np2,
    _window_attention_bwd_dkdv_kernel,
    _window_attention_bwd_dq_kernel,
    _window_attention_dense_bias_kernel,
    _window_attention_fwd_kernel,
    _window_attention_table_grad_kernel,
)

_BIAS_T_BLOCK = 128  # table entries per program of the table-gradient gather
_BIAS_I_BLOCK = 16  # queries per step of that gather: a [16, 128] tile (at [64, 128] triton 3.6 spilled 1 KB)
_DENSE_I_BLOCK = 16  # query rows per program of the dense-bias build
_FWD_PROGRAMS = 132 * 16  # ~4 waves of 4 resident programs on an H100's 132 SMs; longer programs hide latency
_DQ_PROGRAMS = 132 * 8  # the bias-grad partials are [programs, NP, NP]: fewer, longer programs
_INT32_SPAN = 2 ** 31


class _Geometry:
    """Kernel-facing description of one call: token map ints, position strides, feature flags."""

    def __init__(self, qkv, num_heads, mode_map, window, shift=(0, 0), pad_roll=False):
        self.map = mode_map
        self.heads = num_heads
        C3 = qkv.shape[-1]
        self.C = C3 // 3
        self.d = self.C // num_heads
        self.d_pad = _np2(self.d)
        wh, ww = window
        if mode_map:
            B, H, W, _ = qkv.shape
            self.n_wh, self.n_ww = triton.cdiv(H, wh), triton.cdiv(W, ww)
            hp, wp = self.n_wh * wh, self.n_ww * ww
            self.H, self.W = H, W
            self.HMOD, self.WMOD = (hp, wp) if pad_roll else (H, W)
            self.RLIM, self.CLIM = self.HMOD, self.WMOD
            self.SH, self.SW = shift
            self.batch = B
            self.n_win = B * self.n_wh * self.n_ww
            self.N = wh * ww
            self.pos_shape = (B, H, W)
            self.padded = hp != H or wp != W
        else:
            B_, N, _ = qkv.shape
            self.n_wh = self.n_ww = 1
            self.H = self.W = self.HMOD = self.WMOD = self.RLIM = self.CLIM = 1
            self.SH = self.SW = 0
            self.batch = self.n_win = B_
            self.N = N
            self.pos_shape = (B_, N)
            self.padded = False
        self.wh, self.ww = wh, ww
        self.np = _np2(self.N)
        self.shifted = mode_map and (self.SH > 0 or self.SW > 0)

    def ints(self, n_groups, cpk):
        """Token-map ints, (window count per image row/col), batch per group, groups, chunks, heads."""
        # one conditional wrap suffices in the kernel when the shift is reduced modulo the map
        sh, sw = self.SH % self.HMOD, self.SW % self.WMOD
        n_batch = self.batch if self.map else self.n_win // n_groups
        return (self.N, self.C, self.H, self.W, self.HMOD, self.WMOD, self.RLIM, self.CLIM,
                self.n_wh, self.n_ww, sh, sw, n_batch, n_groups, cpk, self.heads)

    def pos_strides(self, t, channel=True):
        """(s_b, s_y, s_x[, s_c]) of a [B, H, W, C] or [B, N, C] tensor."""
        s = t.stride()
        out = (s[0], s[1], s[2]) if self.map else (s[0], s[1], 0)
        return out + (s[-1],) if channel else out

    def groups(self, mask):
        return 4 if self.shifted else (mask.shape[0] if mask is not None else 1)

    def chunks(self, n_groups, target):
        """Chunks per group: about `target` programs in all (one chunk per group when interpreting)."""
        if interpreting():
            return 1
        if not self.map:
            largest = self.n_win // n_groups
        elif self.shifted:  # kinds: interior, last column, last row, corner
            largest = self.batch * max(a * b for a in (self.n_wh - 1, 1) for b in (self.n_ww - 1, 1))
        else:
            largest = self.batch * self.n_wh * self.n_ww
        return max(1, min(largest, target // (n_groups * self.heads)))


def _off64(*tensors) -> bool:
    """True when some tensor spans 2**31 elements or more within one image/window (dims 1..)."""
    for t in tensors:
        if t is not None and t.dim() > 1:
            if sum((n - 1) * s for n, s in zip(t.shape[1:], t.stride()[1:])) >= _INT32_SPAN:
                return True
    return False


def _dense_bias(geo, table, qkv):
    """[kinds, heads, NP, NP] fp32 bias + shift mask, -inf at keys >= N; None if neither."""
    if table is None and not geo.shifted:
        return None
    kinds = 4 if geo.shifted else 1
    dense = launch.empty((kinds, geo.heads, geo.np, geo.np), qkv, torch.float32)
    launch.run(_window_attention_dense_bias_kernel, (kinds * geo.heads, geo.np // _DENSE_I_BLOCK),
            table if table is not None else dense, dense, geo.N, geo.SH, geo.SW, geo.heads,
            *(table.stride() if table is not None else (0, 0)),
            WH=geo.wh, WW=geo.ww, NP=geo.np, HAS_TABLE=table is not None, SHIFTED=geo.shifted,
            BLOCK_I=_DENSE_I_BLOCK, num_warps=4)
    return dense


def _mask_strides(mask):
    return tuple(mask.stride()) if mask is not None else (0, 0, 0)


def _flags(geo, qkv, dense, mask, qkv_bias, off64):
    return dict(HEAD_DIM=geo.d, D_PAD=geo.d_pad, NP=geo.np, WH=geo.wh, WW=geo.ww, MAP=geo.map, SHIFTED=geo.shifted,
                PADDED=geo.padded, HAS_DENSE=dense is not None, HAS_MASK=mask is not None,
                HAS_PAD=qkv_bias is not None and geo.padded, OFF64=off64, IEEE=qkv.dtype == torch.float32)


def _fwd(geo, qkv, table, qkv_bias, mask, scale):
    """Forward for any mode. Returns (out [*pos, heads*d] contiguous, stats [windows, heads, 2, N] fp32).

    stats[:, :, 0] is each query's logit max m, natural units (+inf for a row whose logits are all
    -inf), stats[:, :, 1] log2 of its sum of exp(s - m); the backward takes them as they are.
    """
    out = launch.empty(geo.pos_shape + (geo.C,), qkv)
    lse = launch.empty((geo.n_win, geo.heads, 2, geo.N), qkv, torch.float32)
    if out.numel() == 0:
        return out, lse
    dense = _dense_bias(geo, table, qkv)
    n_groups = geo.groups(mask)
    cpk = geo.chunks(n_groups, _FWD_PROGRAMS)
    off64 = _off64(qkv, out, mask)
    grid = lambda META: (n_groups * cpk * triton.cdiv(geo.N, META["BLOCK_M"]) * geo.heads,)  # noqa: E731
    launch.run(_window_attention_fwd_kernel, grid,
        qkv, qkv_bias if qkv_bias is not None else qkv, dense if dense is not None else lse,
        mask if mask is not None else qkv, out, lse,
        *geo.ints(n_groups, cpk),
        *geo.pos_strides(qkv), qkv_bias.stride(0) if qkv_bias is not None else 0,
        *geo.pos_strides(out, channel=False), *_mask_strides(mask), scale,
        **_flags(geo, qkv, dense, mask, qkv_bias, off64),
    )
    return out, lse


def _bwd(geo, dout, qkv, table, qkv_bias, mask, out, lse, scale, need_table_grad, need_bias_grad,
         need_mask_grad=False):
    """Backward for any mode.

    Returns (dqkv like qkv's shape, dtable [T, heads], dbias [3C], dmask like mask); a gradient that
    is not needed (or whose input is None) comes back as an empty [0] tensor.
    """
    N, heads, np_ = geo.N, geo.heads, geo.np
    if qkv.numel() == 0:  # nothing attends: zero gradients
        return (torch.zeros_like(qkv),
                torch.zeros_like(table) if need_table_grad and table is not None else qkv.new_zeros(0),
                torch.zeros_like(qkv_bias) if need_bias_grad and qkv_bias is not None else qkv.new_zeros(0),
                torch.zeros_like(mask) if need_mask_grad and mask is not None else qkv.new_zeros(0))
    dqkv = launch.empty(qkv.shape, qkv)
    delta = launch.empty((geo.n_win, heads, N), qkv, torch.float32)
    table_grad = bool(need_table_grad and table is not None)
    mask_grad = bool(need_mask_grad and mask is not None)
    pad_grad = bool(need_bias_grad and qkv_bias is not None and geo.padded)
    bias_grad = table_grad or mask_grad
    dense = _dense_bias(geo, table, qkv)
    n_groups = geo.groups(mask)
    off64 = _off64(qkv, out, dout, dqkv, mask)
    flags = _flags(geo, qkv, dense, mask, qkv_bias, off64)
    ptrs = (qkv, qkv_bias if qkv_bias is not None else qkv, dense if dense is not None else lse,
            mask if mask is not None else qkv)
    pb_stride = qkv_bias.stride(0) if qkv_bias is not None else 0
    tail = (*_mask_strides(mask), scale)

    # dq (+ delta, + dS partials per group for the table / mask gradients)
    cpk = geo.chunks(n_groups, _DQ_PROGRAMS if bias_grad else _FWD_PROGRAMS)
    gpart = torch.zeros((n_groups, cpk, heads, np_, np_) if bias_grad else (1,), device=qkv.device,
                        dtype=torch.float32)
    grid = lambda META: (n_groups * cpk * triton.cdiv(N, META["BLOCK_M"]) * heads,)  # noqa: E731
    launch.run(_window_attention_bwd_dq_kernel, grid,
        *ptrs, dout, lse, delta, dqkv, gpart,
        *geo.ints(n_groups, cpk),
        *geo.pos_strides(qkv), pb_stride, *geo.pos_strides(dout),
        *geo.pos_strides(dqkv, channel=False), *tail,
        BIAS_GRAD=bias_grad, **flags,
    )

    # dk, dv (+ padding-token partials for the qkv_bias gradient)
    cpk = geo.chunks(n_groups, _FWD_PROGRAMS)
    max_kb = triton.cdiv(np_, 16)  # smallest BLOCK_N any config uses
    dpad_part = torch.zeros((geo.n_win, max_kb, heads, 2, geo.d_pad), device=qkv.device, dtype=torch.float32) \
        if pad_grad else lse
    grid = lambda META: (n_groups * cpk * triton.cdiv(N, META["BLOCK_N"]) * heads,)  # noqa: E731
    launch.run(_window_attention_bwd_dkdv_kernel, grid,
        *ptrs, dout, lse, delta, dqkv, dpad_part,
        *geo.ints(n_groups, cpk), max_kb,
        *geo.pos_strides(qkv), pb_stride, *geo.pos_strides(dout), *geo.pos_strides(dqkv, channel=False), *tail,
        PAD_GRAD=pad_grad, **flags,
    )

    g = gpart.sum(1) if bias_grad else None  # [groups, heads, NP, NP]; torch reductions have a fixed order
    if table_grad:
        T = table.shape[0]
        dtable = launch.empty(tuple(table.shape), table)
        launch.run(_window_attention_table_grad_kernel, (triton.cdiv(T, _BIAS_T_BLOCK), heads),
            g.sum(0), dtable, T, N, heads, np_, dtable.stride(0), dtable.stride(1),
            WH=geo.wh, WW=geo.ww, BLOCK_I=_BIAS_I_BLOCK, BLOCK_T=_BIAS_T_BLOCK, num_warps=4,
        )
    else:
        dtable = qkv.new_zeros(0)
    if mask_grad:  # group k is mask window k: sum over heads
        dmask = g[:, :, :N, :N].sum(1).to(mask.dtype)
    else:
        dmask = qkv.new_zeros(0)
    if need_bias_grad and qkv_bias is not None:
        if pad_grad:
            kv = dpad_part.sum((0, 1))[..., :geo.d].permute(1, 0, 2).reshape(2 * geo.C)  # [2, heads, d]: k, v
            dbias = torch.cat([kv.new_zeros(geo.C), kv]).to(qkv_bias.dtype)  # padded queries get no gradient
        else:
            dbias = qkv_bias.new_zeros(qkv_bias.shape)
    else:
        dbias = qkv.new_zeros(0)
    return dqkv, dtable, dbias, dmask


# ---------------------------------------------------------------------------------- the ops' launchers

def shifted_window_attention_fwd_triton(qkv: Tensor, rel_pos_bias_table: Optional[Tensor],
                                        qkv_bias: Optional[Tensor], num_heads: int, window_size: List[int],
                                        shift_size: List[int], scale: float, pad_roll: bool) -> Tuple[Tensor, Tensor]:
    """qkv [B, H, W, 3C] -> (out [B, H, W, C], stats [windows, heads, 2, N] fp32)."""
    geo = _Geometry(qkv, num_heads, True, tuple(window_size), tuple(shift_size), pad_roll)
    return _fwd(geo, qkv, rel_pos_bias_table, qkv_bias, None, scale)


def shifted_window_attention_bwd_triton(grad_out: Tensor, out: Tensor, lse: Tensor, qkv: Tensor,
                                        rel_pos_bias_table: Optional[Tensor], qkv_bias: Optional[Tensor],
                                        num_heads: int, window_size: List[int], shift_size: List[int], scale: float,
                                        pad_roll: bool, needs_grad: List[bool]) -> Tuple[Tensor, Tensor, Tensor]:
    geo = _Geometry(qkv, num_heads, True, tuple(window_size), tuple(shift_size), pad_roll)
    dqkv, dtable, dbias, _ = _bwd(geo, grad_out, qkv, rel_pos_bias_table, qkv_bias, None, out, lse, scale,
                                  bool(needs_grad[1]), bool(needs_grad[2]) and geo.padded, False)
    # without padding no token carries qkv_bias: no gradient, like the reference
    return dqkv, dtable, dbias if geo.padded else qkv.new_empty(0)


def window_attention_fwd_triton(qkv: Tensor, rel_pos_bias_table: Optional[Tensor], mask: Optional[Tensor],
                                num_heads: int, window_size: List[int], scale: float) -> Tuple[Tensor, Tensor]:
    """qkv [B_, N, 3C] (mask [nW, N, N] or None) -> (out [B_, N, C], stats [B_, heads, 2, N] fp32)."""
    geo = _Geometry(qkv, num_heads, False, tuple(window_size))
    return _fwd(geo, qkv, rel_pos_bias_table, None, mask, scale)


def window_attention_bwd_triton(grad_out: Tensor, out: Tensor, lse: Tensor, qkv: Tensor,
                                rel_pos_bias_table: Optional[Tensor], mask: Optional[Tensor], num_heads: int,
                                window_size: List[int], scale: float,
                                needs_grad: List[bool]) -> Tuple[Tensor, Tensor, Tensor]:
    geo = _Geometry(qkv, num_heads, False, tuple(window_size))
    dqkv, dtable, _, dmask = _bwd(geo, grad_out, qkv, rel_pos_bias_table, None, mask, out, lse, scale,
                                  bool(needs_grad[1]), False, bool(needs_grad[2]))
    return dqkv, dtable, dmask


def attention_fwd_triton(qkv: Tensor, num_heads: int, scale: float) -> Tuple[Tensor, Tensor]:
    """qkv [B, N, 3C] -> (out [B, N, C], stats [B, heads, 2, N] fp32): one window of all N tokens."""
    geo = _Geometry(qkv, num_heads, False, (1, 1))
    return _fwd(geo, qkv, None, None, None, scale)


def attention_bwd_triton(grad_out: Tensor, out: Tensor, lse: Tensor, qkv: Tensor, num_heads: int, scale: float,
                         needs_grad: List[bool]) -> Tensor:
    geo = _Geometry(qkv, num_heads, False, (1, 1))
    return _bwd(geo, grad_out, qkv, None, None, None, out, lse, scale, False, False, False)[0]
