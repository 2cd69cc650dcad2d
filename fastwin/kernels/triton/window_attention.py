"""Fused (shifted-)window and global attention, forward and backward, in Triton.

One kernel family serves three ops; a program handles one (window, head, block of tokens):

* MAP mode (partition-free Swin): q/k/v are read straight from the qkv map
      qkv  [B, H, W, 3 * heads * d]   channel order (3, heads, d), any strides
  token `i` of window `w` sits at row r = wy*Wh + i // Ww, col c = wx*Ww + i % Ww of the padded,
  cyclically shifted grid; its source pixel is ((r + sh) % HMOD, (c + sw) % WMOD) and it is a real
  pixel when r < RLIM, c < CLIM and the source lies inside the H x W map:
      roll_pad (timm):        HMOD = H,  RLIM = H   (roll the map, then pad bottom/right)
      pad_roll (det/seg):     HMOD = Hp, RLIM = Hp  (pad, then roll the padded map)
  Other tokens are padding and carry `qkv_bias` (or zero) as q/k/v. The output is written to the
  same source pixel, i.e. at the un-shifted position: out [B, H, W, heads * d].
  The shift mask (-100.0 across regions) comes from region ids of (r, c) computed in the kernel.
* SEQ mode: qkv [B_, N, 3 * heads * d]; window `w` is row `w` (given windows, or the whole sequence
  for global attention). Optional bias table and optional additive mask [nW, N, N] (window w % nW).

The relative-position bias is gathered from the table [(2Wh-1)(2Ww-1), heads] inside the kernel.
Softmax runs in base 2 in fp32; the forward saves the output and the base-2 logsumexp per
(window, head, token) only, and the backward recomputes the probabilities (flash-attention style):
    dq kernel   (also computes delta = rowsum(dO * O) and the bias-table partials)
    dkdv kernel (also sums dk/dv of padding tokens for the qkv_bias gradient)
    table kernel: deterministic gather of the per-pair bias gradient into the table.

Bias-table gradient (deterministic, no atomics): each dq program walks a fixed chunk of windows of
one head and keeps sum_w dS_w[i, j] for all key positions in registers (it loads all keys of a
window as one block), writes that [NP, NP] partial once; torch sums the chunks (a fixed-order
reduction) and `_window_attention_bias_grad_kernel` folds pairs (i, j) into table entries in a fixed
order. qkv_bias gradient: per-(window, key block) partial sums of the padding tokens' dk/dv, summed
by torch; padding tokens' outputs are discarded, so their dq (the q part) is exactly zero.

Limits: head dim 16/32/64/128 (power of two, `tl.dot` needs >= 16); windows up to 1024 tokens
(next power of two NP of N <= 1024, and the dq kernel's [NP, d] k and v tiles within
MAX_KEY_BLOCK_BYTES, e.g. window 24 needs d <= 32 in fp16/bf16); fp16, bf16 and
fp32 (fp32 uses IEEE dots, not TF32, to match the fp32 reference); no dropout.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake
from torch.library import wrap_triton

_LOG2E = tl.constexpr(1.4426950408889634)  # 1 / ln 2: softmax in base 2 (exp2 is the native op)
_MASK_VALUE = tl.constexpr(-100.0)  # the official Swin shift-mask value (not -inf)
_MAX_TILE = 16384  # elements of an fp32 [BLOCK_M, BLOCK_N] tile that still fit in registers
_MAX_DQ_TILE = 8192  # the dq kernel holds five such tiles (s, p, dp, ds and the bias-grad sum)
MAX_WINDOW_TOKENS = 1024  # keys of a window are one block in the dq kernel (bias-grad registers)
MAX_KEY_BLOCK_BYTES = 131072  # k + v tiles of that key block must fit in shared memory (228 KB on H100)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _np2(n: int) -> int:
    return max(16, triton.next_power_of_2(int(n)))  # tl.dot needs every dim >= 16


# ----------------------------------------------------------------------------------------------
# Autotune configs and prune filters
# ----------------------------------------------------------------------------------------------

def _cfg(bm, bn, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


# (BLOCK_M queries, BLOCK_N keys, warps, stages); 16/32 tiles exist for 7x7 / 4x4 windows
_TILE_CONFIGS = [
    _cfg(64, 64, 4, 2), _cfg(64, 64, 4, 3), _cfg(32, 32, 4, 2), _cfg(16, 16, 2, 1), _cfg(32, 64, 4, 2),
    _cfg(64, 32, 4, 2), _cfg(128, 64, 8, 2), _cfg(64, 128, 8, 2), _cfg(128, 128, 8, 2),
]

# dq kernel: BLOCK_N is chosen by the launcher (all keys of a window, or 64 for global attention)
_DQ_CONFIGS = [
    triton.Config({"BLOCK_M": bm}, num_warps=w, num_stages=s)
    for bm, w, s in [(64, 4, 2), (16, 4, 1), (16, 8, 1), (32, 4, 2), (32, 8, 2), (64, 8, 2), (128, 8, 2)]
]


def _merged(named_args, kwargs):
    args = dict(named_args)
    args.update(kwargs)
    return args


def _prune_tiles(configs, named_args, **kwargs):
    """Keep tiles no larger than the (padded) window and small enough for registers."""
    args = _merged(named_args, kwargs)
    np_, d = _np2(args["N"]), args["HEAD_DIM"]

    def fits(c):
        bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        return bm <= np_ and bn <= np_ and bm * bn <= _MAX_TILE and bn * d <= _MAX_TILE

    kept = [c for c in configs if fits(c)] or [c for c in configs if c.kwargs["BLOCK_M"] == 16][:1]
    if _interpreting():  # one config, so the interpreter never benchmarks; 64 tiles keep grids tiny
        want = min(64, np_)
        kept = [c for c in kept if c.kwargs["BLOCK_M"] == want and c.kwargs["BLOCK_N"] == want][:1] or kept[:1]
    elif np_ >= 64:  # tiles below 32 only waste issue slots once the window has >= 64 tokens
        kept = [c for c in kept if c.kwargs["BLOCK_M"] >= 32 and c.kwargs["BLOCK_N"] >= 32] or kept
    return kept


def _prune_dq(configs, named_args, **kwargs):
    args = _merged(named_args, kwargs)
    np_, bn = _np2(args["N"]), args["BLOCK_N"]
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= np_ and c.kwargs["BLOCK_M"] * bn <= _MAX_DQ_TILE]
    kept = kept or [c for c in configs if c.kwargs["BLOCK_M"] == 16 and c.num_warps == 8]
    if _interpreting():
        want = max(c.kwargs["BLOCK_M"] for c in kept)
        kept = [c for c in kept if c.kwargs["BLOCK_M"] == want][:1]
    return kept


_TILE_KEY = ["N", "HEAD_DIM", "MAP", "HAS_BIAS", "HAS_MASK", "SHIFTED"]

# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _token_pos(win, offs, N, H, W, HMOD, WMOD, RLIM, CLIM, n_wh, n_ww, SH, SW,
               WH: tl.constexpr, WW: tl.constexpr, MAP: tl.constexpr):
    """Where tokens `offs` of window `win` live: (batch, y, x) index parts, real-pixel mask, region id.

    MAP: (b, source row, source col) in the [B, H, W, .] map; SEQ: (window, token, 0).
    Indices of non-real tokens are clamped to 0 so masked addresses stay in bounds.
    """
    if MAP:
        n_img = n_wh * n_ww
        b = (win // n_img).to(tl.int64)
        rem = win % n_img
        r = (rem // n_ww) * WH + offs // WW  # row in the padded, shifted grid
        c = (rem % n_ww) * WW + offs % WW
        sr = (r + SH) % HMOD
        sc = (c + SW) % WMOD
        real = (offs < N) & (r < RLIM) & (c < CLIM) & (sr < H) & (sc < W)
        y = tl.where(real, sr, 0)
        x = tl.where(real, sc, 0)
        hp = n_wh * WH
        wp = n_ww * WW
        # official slices (0, -win), (-win, -shift), (-shift, None) of the padded grid -> 0, 1, 2
        rid = ((r >= hp - WH).to(tl.int32) + (r >= hp - SH).to(tl.int32)) * 3 \
            + (c >= wp - WW).to(tl.int32) + (c >= wp - SW).to(tl.int32)
    else:
        b = win.to(tl.int64)
        real = offs < N
        y = tl.where(real, offs, 0)
        x = offs * 0
        rid = offs * 0
    return b, y, x, real, rid


@triton.jit
def _load_part(base, pad_bias, b, y, x, real, s_b, s_y, s_x, s_c, ch0, dd, HAS_PAD: tl.constexpr):
    """Load channels ch0 + dd of the tokens; padding tokens get pad_bias[ch0 + dd] (or 0)."""
    ptrs = base + b * s_b + (y * s_y + x * s_x)[:, None] + (ch0 + dd)[None, :] * s_c
    t = tl.load(ptrs, mask=real[:, None], other=0.0)
    if HAS_PAD:
        pb = tl.load(pad_bias + ch0 + dd)
        t = tl.where(real[:, None], t, pb[None, :])
    return t


@triton.jit
def _mm(a, b, IEEE: tl.constexpr):
    """a @ b with fp32 accumulation; fp32 operands use IEEE products (no TF32) to match fp32 torch."""
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _logits(q, k, scale, win, h, offs_m, offs_n, rid_m, rid_n, N, table, s_tt, s_th, mask, n_mask,
            s_mw, s_mi, s_mj, WH: tl.constexpr, WW: tl.constexpr, HAS_BIAS: tl.constexpr,
            SHIFTED: tl.constexpr, HAS_MASK: tl.constexpr, IEEE: tl.constexpr):
    """(q * scale) @ k^T + bias[index] + shift mask + given mask; keys beyond N -> -inf.  [BM, BN] fp32."""
    s = _mm(q, tl.trans(k), IEEE) * scale
    valid = (offs_m < N)[:, None] & (offs_n < N)[None, :]
    if HAS_BIAS:
        dy = (offs_m // WW)[:, None] - (offs_n // WW)[None, :]
        dx = (offs_m % WW)[:, None] - (offs_n % WW)[None, :]
        idx = (dy + (WH - 1)) * (2 * WW - 1) + (dx + (WW - 1))
        idx = tl.where(valid, idx, 0)
        s += tl.load(table + idx * s_tt + h * s_th, mask=valid, other=0.0).to(tl.float32)
    if SHIFTED:
        s += tl.where(rid_m[:, None] != rid_n[None, :], _MASK_VALUE, 0.0)
    if HAS_MASK:
        mw = (win % n_mask).to(tl.int64)
        mi = tl.where(offs_m < N, offs_m, 0)
        mj = tl.where(offs_n < N, offs_n, 0)
        s += tl.load(mask + mw * s_mw + mi[:, None] * s_mi + mj[None, :] * s_mj, mask=valid, other=0.0).to(tl.float32)
    return tl.where((offs_n < N)[None, :], s, float("-inf"))


@triton.autotune(configs=_TILE_CONFIGS, key=_TILE_KEY, prune_configs_by={"early_config_prune": _prune_tiles})
@triton.jit
def _window_attention_fwd_kernel(
    qkv, pad_bias, table, mask, out, lse,
    N, C, H, W, HMOD, WMOD, RLIM, CLIM, n_wh, n_ww, SH, SW, n_mask, num_heads,
    s_qb, s_qy, s_qx, s_qc,  # qkv strides (MAP: b, h, w, c; SEQ: b, n, 0, c)
    s_ob, s_oy, s_ox,  # out strides (channel stride 1)
    s_tt, s_th, s_mw, s_mi, s_mj, scale,
    HEAD_DIM: tl.constexpr, WH: tl.constexpr, WW: tl.constexpr, MAP: tl.constexpr, SHIFTED: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_PAD: tl.constexpr, HAS_MASK: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    win = tl.program_id(0)
    h = tl.program_id(1)
    offs_m = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
    dd = tl.arange(0, HEAD_DIM)
    qb, qy, qx, q_real, q_rid = _token_pos(win, offs_m, N, H, W, HMOD, WMOD, RLIM, CLIM, n_wh, n_ww, SH, SW, WH, WW, MAP)
    q = _load_part(qkv, pad_bias, qb, qy, qx, q_real, s_qb, s_qy, s_qx, s_qc, h * HEAD_DIM, dd, HAS_PAD)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max (base 2)
    l_i = tl.zeros([BLOCK_M], tl.float32)  # running sum of exp2
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kb, ky, kx, k_real, k_rid = _token_pos(win, offs_n, N, H, W, HMOD, WMOD, RLIM, CLIM, n_wh, n_ww, SH, SW, WH, WW, MAP)
        k = _load_part(qkv, pad_bias, kb, ky, kx, k_real, s_qb, s_qy, s_qx, s_qc, C + h * HEAD_DIM, dd, HAS_PAD)
        v = _load_part(qkv, pad_bias, kb, ky, kx, k_real, s_qb, s_qy, s_qx, s_qc, 2 * C + h * HEAD_DIM, dd, HAS_PAD)
        s = _logits(q, k, scale, win, h, offs_m, offs_n, q_rid, k_rid, N, table, s_tt, s_th, mask, n_mask,
                    s_mw, s_mi, s_mj, WH, WW, HAS_BIAS, SHIFTED, HAS_MASK, IEEE) * _LOG2E
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: key 0 of every window is valid
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _mm(p.to(v.dtype), v, IEEE)
        m_i = m_new
    acc = acc / l_i[:, None]

    o_ptrs = out + qb * s_ob + (qy * s_oy + qx * s_ox)[:, None] + (h * HEAD_DIM + dd)[None, :]
    tl.store(o_ptrs, acc.to(out.dtype.element_ty), mask=q_real[:, None])
    lse_row = (win.to(tl.int64) * num_heads + h) * N
    tl.store(lse + lse_row + offs_m, m_i + tl.log2(l_i), mask=offs_m < N)


@triton.autotune(configs=_DQ_CONFIGS, key=_TILE_KEY + ["BLOCK_N", "BIAS_GRAD"],
                 prune_configs_by={"early_config_prune": _prune_dq})
@triton.jit
def _window_attention_bwd_dq_kernel(
    qkv, pad_bias, table, mask, out, dout, lse, delta, dqkv, dtab_part,
    N, C, H, W, HMOD, WMOD, RLIM, CLIM, n_wh, n_ww, SH, SW, n_mask, num_heads, n_win, wpp,
    s_qb, s_qy, s_qx, s_qc,
    s_ob, s_oy, s_ox,  # out (channel stride 1)
    s_gb, s_gy, s_gx, s_gc,  # dout
    s_db, s_dy, s_dx,  # dqkv (channel stride 1)
    s_tt, s_th, s_mw, s_mi, s_mj, scale,
    HEAD_DIM: tl.constexpr, WH: tl.constexpr, WW: tl.constexpr, MAP: tl.constexpr, SHIFTED: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_PAD: tl.constexpr, HAS_MASK: tl.constexpr, IEEE: tl.constexpr,
    BIAS_GRAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """dq for windows [chunk * wpp, chunk * wpp + wpp) of one head; BIAS_GRAD needs BLOCK_N >= N."""
    chunk = tl.program_id(0)
    h = tl.program_id(1)
    offs_m = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
    dd = tl.arange(0, HEAD_DIM)
    g = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)  # sum over this chunk's windows of dS
    for i_w in range(0, tl.minimum(wpp, n_win - chunk * wpp)):
        win = chunk * wpp + i_w  # a tensor, unlike a loop variable under the interpreter
        qb, qy, qx, q_real, q_rid = _token_pos(win, offs_m, N, H, W, HMOD, WMOD, RLIM, CLIM, n_wh, n_ww, SH, SW, WH, WW, MAP)
        q = _load_part(qkv, pad_bias, qb, qy, qx, q_real, s_qb, s_qy, s_qx, s_qc, h * HEAD_DIM, dd, HAS_PAD)
        # padding tokens' outputs are cropped away: their dO (and so dS and dq) is zero
        do = tl.load(dout + qb * s_gb + (qy * s_gy + qx * s_gx)[:, None] + (h * HEAD_DIM + dd)[None, :] * s_gc,
                     mask=q_real[:, None], other=0.0)
        o = tl.load(out + qb * s_ob + (qy * s_oy + qx * s_ox)[:, None] + (h * HEAD_DIM + dd)[None, :],
                    mask=q_real[:, None], other=0.0)
        row = (win.to(tl.int64) * num_heads + h) * N
        dlt = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
        tl.store(delta + row + offs_m, dlt, mask=offs_m < N)
        l2 = tl.load(lse + row + offs_m, mask=offs_m < N, other=0.0)
        dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        for start_n in range(0, N, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            kb, ky, kx, k_real, k_rid = _token_pos(win, offs_n, N, H, W, HMOD, WMOD, RLIM, CLIM, n_wh, n_ww, SH, SW, WH, WW, MAP)
            k = _load_part(qkv, pad_bias, kb, ky, kx, k_real, s_qb, s_qy, s_qx, s_qc, C + h * HEAD_DIM, dd, HAS_PAD)
            v = _load_part(qkv, pad_bias, kb, ky, kx, k_real, s_qb, s_qy, s_qx, s_qc, 2 * C + h * HEAD_DIM, dd, HAS_PAD)
            s = _logits(q, k, scale, win, h, offs_m, offs_n, q_rid, k_rid, N, table, s_tt, s_th, mask, n_mask,
                        s_mw, s_mi, s_mj, WH, WW, HAS_BIAS, SHIFTED, HAS_MASK, IEEE)
            valid = (offs_m < N)[:, None] & (offs_n < N)[None, :]
            p = tl.where(valid, tl.exp2(s * _LOG2E - l2[:, None]), 0.0)
            dp = _mm(do, tl.trans(v), IEEE)
            ds = p * (dp - dlt[:, None])  # d logits
            if BIAS_GRAD:
                g += ds
            dq += _mm(ds.to(k.dtype), k, IEEE)
        dq = dq * scale
        tl.store(dqkv + qb * s_db + (qy * s_dy + qx * s_dx)[:, None] + (h * HEAD_DIM + dd)[None, :],
                 dq.to(dqkv.dtype.element_ty), mask=q_real[:, None])
    if BIAS_GRAD:
        # dtab_part: [chunks, heads, NP, BLOCK_N] with NP a multiple of BLOCK_M
        base = (chunk.to(tl.int64) * num_heads + h) * tl.num_programs(2) * BLOCK_M * BLOCK_N
        cols = tl.arange(0, BLOCK_N)
        tl.store(dtab_part + base + offs_m[:, None] * BLOCK_N + cols[None, :], g)


@triton.autotune(configs=_TILE_CONFIGS, key=_TILE_KEY + ["PAD_GRAD"],
                 prune_configs_by={"early_config_prune": _prune_tiles})
@triton.jit
def _window_attention_bwd_dkdv_kernel(
    qkv, pad_bias, table, mask, dout, lse, delta, dqkv, dpad_part,
    N, C, H, W, HMOD, WMOD, RLIM, CLIM, n_wh, n_ww, SH, SW, n_mask, num_heads, max_kb,
    s_qb, s_qy, s_qx, s_qc,
    s_gb, s_gy, s_gx, s_gc,  # dout
    s_db, s_dy, s_dx,  # dqkv (channel stride 1)
    s_tt, s_th, s_mw, s_mi, s_mj, scale,
    HEAD_DIM: tl.constexpr, WH: tl.constexpr, WW: tl.constexpr, MAP: tl.constexpr, SHIFTED: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_PAD: tl.constexpr, HAS_MASK: tl.constexpr, IEEE: tl.constexpr,
    PAD_GRAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dk, dv for one block of keys of one (window, head); loops over all query blocks."""
    win = tl.program_id(0)
    h = tl.program_id(1)
    pid_n = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    dd = tl.arange(0, HEAD_DIM)
    kb, ky, kx, k_real, k_rid = _token_pos(win, offs_n, N, H, W, HMOD, WMOD, RLIM, CLIM, n_wh, n_ww, SH, SW, WH, WW, MAP)
    k = _load_part(qkv, pad_bias, kb, ky, kx, k_real, s_qb, s_qy, s_qx, s_qc, C + h * HEAD_DIM, dd, HAS_PAD)
    v = _load_part(qkv, pad_bias, kb, ky, kx, k_real, s_qb, s_qy, s_qx, s_qc, 2 * C + h * HEAD_DIM, dd, HAS_PAD)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    row = (win.to(tl.int64) * num_heads + h) * N
    for start_m in range(0, N, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        qb, qy, qx, q_real, q_rid = _token_pos(win, offs_m, N, H, W, HMOD, WMOD, RLIM, CLIM, n_wh, n_ww, SH, SW, WH, WW, MAP)
        q = _load_part(qkv, pad_bias, qb, qy, qx, q_real, s_qb, s_qy, s_qx, s_qc, h * HEAD_DIM, dd, HAS_PAD)
        do = tl.load(dout + qb * s_gb + (qy * s_gy + qx * s_gx)[:, None] + (h * HEAD_DIM + dd)[None, :] * s_gc,
                     mask=q_real[:, None], other=0.0)
        l2 = tl.load(lse + row + offs_m, mask=offs_m < N, other=0.0)
        dlt = tl.load(delta + row + offs_m, mask=offs_m < N, other=0.0)
        s = _logits(q, k, scale, win, h, offs_m, offs_n, q_rid, k_rid, N, table, s_tt, s_th, mask, n_mask,
                    s_mw, s_mi, s_mj, WH, WW, HAS_BIAS, SHIFTED, HAS_MASK, IEEE)
        valid = (offs_m < N)[:, None] & (offs_n < N)[None, :]
        p = tl.where(valid, tl.exp2(s * _LOG2E - l2[:, None]), 0.0)  # [BM, BN]
        dv += _mm(tl.trans(p.to(do.dtype)), do, IEEE)
        dp = _mm(do, tl.trans(v), IEEE)
        ds = p * (dp - dlt[:, None])
        dk += _mm(tl.trans(ds.to(q.dtype)), q, IEEE)
    dk = dk * scale
    d_ptrs = dqkv + kb * s_db + (ky * s_dy + kx * s_dx)[:, None] + (h * HEAD_DIM + dd)[None, :]
    tl.store(d_ptrs + C, dk.to(dqkv.dtype.element_ty), mask=k_real[:, None])
    tl.store(d_ptrs + 2 * C, dv.to(dqkv.dtype.element_ty), mask=k_real[:, None])
    if PAD_GRAD:
        # dpad_part: [windows, max_kb, heads, 2, HEAD_DIM] fp32 (zero-initialized: unused slots stay 0)
        pad = ((offs_n < N) & (k_real == 0))[:, None]
        slot = ((win.to(tl.int64) * max_kb + pid_n) * num_heads + h) * 2 * HEAD_DIM
        tl.store(dpad_part + slot + dd, tl.sum(tl.where(pad, dk, 0.0), 0))
        tl.store(dpad_part + slot + HEAD_DIM + dd, tl.sum(tl.where(pad, dv, 0.0), 0))


@triton.jit
def _window_attention_bias_grad_kernel(
    g, dtable, T, N, num_heads, NP, s_tt, s_th,
    WH: tl.constexpr, WW: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """dtable[t, h] = sum over pairs (i, j) with index(i, j) == t of g[h, i, j], in a fixed order.

    g: [heads, NP, NP] fp32, the per-pair bias gradient summed over windows and batch. Every query i
    has at most one key j per table entry t, so a [BLOCK_I, BLOCK_T] gather covers BLOCK_I queries.
    """
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    h = tl.program_id(1)
    dy = t // (2 * WW - 1) - (WH - 1)
    dx = t % (2 * WW - 1) - (WW - 1)
    acc = tl.zeros([BLOCK_T], tl.float32)
    base = g + h.to(tl.int64) * NP * NP
    for i0 in range(0, N, BLOCK_I):
        i = i0 + tl.arange(0, BLOCK_I)
        yj = (i // WW)[:, None] - dy[None, :]
        xj = (i % WW)[:, None] - dx[None, :]
        ok = (i < N)[:, None] & (t < T)[None, :] & (yj >= 0) & (yj < WH) & (xj >= 0) & (xj < WW)
        j = tl.where(ok, yj * WW + xj, 0)
        acc += tl.sum(tl.load(base + i[:, None] * NP + j, mask=ok, other=0.0), 0)
    tl.store(dtable + t * s_tt + h * s_th, acc.to(dtable.dtype.element_ty), mask=t < T)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------

_POISON_ENV = "FASTWIN_POISON"  # "1": fill kernel outputs with NaN before launch (tests)
_BIAS_T_BLOCK = 128  # table entries per program of the bias-grad gather
_BIAS_I_BLOCK = 64  # queries per step of the bias-grad gather ([64, 128] fp32 tile)
_DQ_TARGET_PROGRAMS = 1024  # dq programs (with bias grad) to aim for: ~8 per H100 SM


def _launch(kernel, grid, *args, **kwargs):
    """Launch through `wrap_triton` (traceable by torch.compile / make_fx).

    Under TRITON_INTERPRET=1, `wrap_triton` hands back the raw interpreted kernel, which would try to
    run on fake tensors when torch derives the op's fake implementation from the launcher; the fake
    pass only needs the output allocations, so the launch is skipped there.
    """
    if _interpreting() and any(torch.is_tensor(a) and (is_fake(a) or a.device.type == "meta") for a in args):
        return
    wrap_triton(kernel)[grid](*args, **kwargs)


def _empty(shape, like, dtype=None):
    t = torch.empty(shape, device=like.device, dtype=dtype or like.dtype)
    if os.environ.get(_POISON_ENV) == "1":
        t.fill_(float("nan"))
    return t


class _Geometry:
    """Kernel-facing description of one call: token map ints, position strides, feature flags."""

    def __init__(self, qkv, num_heads, mode_map, window, shift=(0, 0), pad_roll=False):
        self.map = mode_map
        self.heads = num_heads
        C3 = qkv.shape[-1]
        self.C = C3 // 3
        self.d = self.C // num_heads
        if mode_map:
            B, H, W, _ = qkv.shape
            wh, ww = window
            self.n_wh, self.n_ww = triton.cdiv(H, wh), triton.cdiv(W, ww)
            hp, wp = self.n_wh * wh, self.n_ww * ww
            self.H, self.W = H, W
            self.HMOD, self.WMOD = (hp, wp) if pad_roll else (H, W)
            self.RLIM, self.CLIM = self.HMOD, self.WMOD
            self.SH, self.SW = shift
            self.n_win = B * self.n_wh * self.n_ww
            self.N = wh * ww
            self.pos_shape = (B, H, W)
            self.padded = hp != H or wp != W
        else:
            B_, N, _ = qkv.shape
            wh, ww = window
            self.n_wh = self.n_ww = 1
            self.H = self.W = self.HMOD = self.WMOD = self.RLIM = self.CLIM = 1
            self.SH = self.SW = 0
            self.n_win, self.N = B_, N
            self.pos_shape = (B_, N)
            self.padded = False
        self.wh, self.ww = wh, ww
        self.shifted = mode_map and (self.SH > 0 or self.SW > 0)

    def ints(self):
        return (self.N, self.C, self.H, self.W, self.HMOD, self.WMOD, self.RLIM, self.CLIM,
                self.n_wh, self.n_ww, self.SH, self.SW)

    def pos_strides(self, t, channel=True):
        """(s_b, s_y, s_x[, s_c]) of a [B, H, W, C] or [B, N, C] tensor."""
        s = t.stride()
        out = (s[0], s[1], s[2]) if self.map else (s[0], s[1], 0)
        return out + (s[-1],) if channel else out


def _opt_strides(t, n):
    return tuple(t.stride()) if t is not None else (0,) * n


def window_attention_fwd_triton(geo, qkv, table, qkv_bias, mask, scale):
    """Forward for any mode. Returns (out [*pos, heads*d] contiguous, lse2 [windows, heads, N] fp32)."""
    out = _empty(geo.pos_shape + (geo.C,), qkv)
    lse = _empty((geo.n_win, geo.heads, geo.N), qkv, torch.float32)
    n_mask = mask.shape[0] if mask is not None else 1
    grid = lambda META: (geo.n_win, geo.heads, triton.cdiv(geo.N, META["BLOCK_M"]))  # noqa: E731
    _launch(_window_attention_fwd_kernel, grid,
        qkv, qkv_bias if qkv_bias is not None else qkv, table if table is not None else qkv,
        mask if mask is not None else qkv, out, lse,
        *geo.ints(), n_mask, geo.heads,
        *geo.pos_strides(qkv), *geo.pos_strides(out, channel=False),
        *_opt_strides(table, 2), *_opt_strides(mask, 3), scale,
        HEAD_DIM=geo.d, WH=geo.wh, WW=geo.ww, MAP=geo.map, SHIFTED=geo.shifted, HAS_BIAS=table is not None,
        HAS_PAD=qkv_bias is not None, HAS_MASK=mask is not None, IEEE=qkv.dtype == torch.float32,
    )
    return out, lse


def window_attention_bwd_triton(geo, dout, qkv, table, qkv_bias, mask, out, lse, scale,
                                need_table_grad, need_bias_grad):
    """Backward for any mode. Returns (dqkv like qkv's shape, dtable [T, heads] or [0], dbias [3C] or [0])."""
    N, heads, d = geo.N, geo.heads, geo.d
    dqkv = _empty(qkv.shape, qkv)
    delta = _empty((geo.n_win, heads, N), qkv, torch.float32)
    n_mask = mask.shape[0] if mask is not None else 1
    table_grad = bool(need_table_grad and table is not None)
    pad_grad = bool(need_bias_grad and qkv_bias is not None and geo.padded)
    np_ = _np2(N)
    common = dict(HEAD_DIM=d, WH=geo.wh, WW=geo.ww, MAP=geo.map, SHIFTED=geo.shifted, HAS_BIAS=table is not None,
                  HAS_PAD=qkv_bias is not None, HAS_MASK=mask is not None, IEEE=qkv.dtype == torch.float32)
    args_tail = (*_opt_strides(table, 2), *_opt_strides(mask, 3), scale)
    ptrs = (qkv, qkv_bias if qkv_bias is not None else qkv, table if table is not None else qkv,
            mask if mask is not None else qkv)

    # dq (+ delta, + bias partials). Windows keep all keys in one block so dS of every pair is in registers.
    windowed = geo.map or table is not None or mask is not None
    block_n = np_ if windowed else 64  # 64 keys per step for global attention (online over blocks)
    if not table_grad:
        wpp = 1  # no partials to bound: one window per program
    elif _interpreting():
        wpp = 2 if geo.n_win > 1 else 1  # exercise the multi-window loop; program count is moot here
    else:  # fewer, longer programs keep the [chunks, heads, NP, NP] partials small
        wpp = max(1, triton.cdiv(geo.n_win * heads * triton.cdiv(np_, 64), _DQ_TARGET_PROGRAMS))
    n_chunks = triton.cdiv(geo.n_win, wpp)
    dtab_part = _empty((n_chunks, heads, np_, block_n), qkv, torch.float32) if table_grad else qkv
    rows = np_ if table_grad else N  # the bias partials cover all NP rows (NP is a multiple of BLOCK_M)
    grid = lambda META: (n_chunks, heads, triton.cdiv(rows, META["BLOCK_M"]))  # noqa: E731
    _launch(_window_attention_bwd_dq_kernel, grid,
        *ptrs, out, dout, lse, delta, dqkv, dtab_part,
        *geo.ints(), n_mask, heads, geo.n_win, wpp,
        *geo.pos_strides(qkv), *geo.pos_strides(out, channel=False), *geo.pos_strides(dout),
        *geo.pos_strides(dqkv, channel=False), *args_tail,
        BIAS_GRAD=table_grad, BLOCK_N=block_n, **common,
    )

    # dk, dv (+ padding-token partials for the qkv_bias gradient)
    max_kb = triton.cdiv(N, 16)  # smallest BLOCK_N any config uses
    dpad_part = torch.zeros((geo.n_win, max_kb, heads, 2, d), device=qkv.device, dtype=torch.float32) \
        if pad_grad else qkv
    grid = lambda META: (geo.n_win, heads, triton.cdiv(N, META["BLOCK_N"]))  # noqa: E731
    _launch(_window_attention_bwd_dkdv_kernel, grid,
        *ptrs, dout, lse, delta, dqkv, dpad_part,
        *geo.ints(), n_mask, heads, max_kb,
        *geo.pos_strides(qkv), *geo.pos_strides(dout), *geo.pos_strides(dqkv, channel=False), *args_tail,
        PAD_GRAD=pad_grad, **common,
    )

    if table_grad:
        g = dtab_part.sum(0)  # [heads, NP, NP]; torch reductions have a fixed order
        T = table.shape[0]
        dtable = _empty(tuple(table.shape), table)
        _launch(_window_attention_bias_grad_kernel, (triton.cdiv(T, _BIAS_T_BLOCK), heads),
            g, dtable, T, N, heads, np_, dtable.stride(0), dtable.stride(1),
            WH=geo.wh, WW=geo.ww, BLOCK_I=_BIAS_I_BLOCK, BLOCK_T=_BIAS_T_BLOCK, num_warps=4,
        )
    else:
        dtable = qkv.new_zeros(0)
    if need_bias_grad and qkv_bias is not None:
        if pad_grad:
            kv = dpad_part.sum((0, 1)).permute(1, 0, 2).reshape(2 * geo.C)  # [2, heads, d] -> k part, v part
            dbias = torch.cat([kv.new_zeros(geo.C), kv]).to(qkv_bias.dtype)  # padded queries get no gradient
        else:
            dbias = qkv_bias.new_zeros(qkv_bias.shape)
    else:
        dbias = qkv.new_zeros(0)
    return dqkv, dtable, dbias
