"""Fused (shifted-)window and global attention, forward and backward: the Triton kernels (their
launchers, which build the geometry below from plain tensors and ints, are in
`window_attention_launchers.py`).

One kernel family serves three ops. Windows are handled in *groups*; a program owns one head, one
block of BLOCK_M queries and a contiguous chunk of the windows of one group, and loops over them:

* MAP mode (partition-free Swin): q/k/v are read straight from the qkv map
      qkv  [B, H, W, 3 * heads * d]   channel order (3, heads, d), any strides
  token `i` of window (wy, wx) sits at row r = wy*Wh + i // Ww, col c = wx*Ww + i % Ww of the
  padded, cyclically shifted grid; its source pixel is ((r + sh) mod HMOD, (c + sw) mod WMOD) and it
  is a real pixel when r < RLIM, c < CLIM and the source lies inside the H x W map:
      roll_pad (timm):        HMOD = H,  RLIM = H   (roll the map, then pad bottom/right)
      pad_roll (det/seg):     HMOD = Hp, RLIM = Hp  (pad, then roll the padded map)
  Other tokens are padding and carry `qkv_bias` (or zero) as q/k/v. The output is written to the
  same source pixel, i.e. at the un-shifted position: out [B, H, W, heads * d].
  Groups are the four window *kinds* (last window row? last window column?) of a shifted map, whose
  shift masks differ, or all windows when unshifted.
* SEQ mode: qkv [B_, N, 3 * heads * d]; window `w` is row `w` (given windows, or the whole sequence
  for global attention). With an additive mask [nW, N, N], group k holds the windows w = k (mod nW),
  which all use mask[k]; otherwise one group.

Bias. Once per call, `_window_attention_dense_bias_kernel` builds a dense additive tile
    dense [kinds, heads, NP, NP] fp32 = table[relative_position_index] + shift mask,
with -inf in the key columns j >= N (NP = N rounded up to a power of two >= 16). It is a few
hundred KB (Swin-T: 4 x 3 x 64 x 64 x 4 B = 192 KB), stays in L2, and a program's windows all use
the same (kind, head) slice, which it loads as a plain [BLOCK_M, BLOCK_N] tile: once per program
into registers (unpipelined configs, and always with a given mask, whose rows are misaligned
gathers), or per window through the software pipeline into shared memory (num_stages 2).
Its gradient is a dense per-group reduction (below). The region ids of the shift mask depend only
on the window kind, so nothing per element is computed from (i // Ww, i % Ww) in the hot loop.

Softmax in fp32: logits s stay in natural units (so does the bias) and each exponent is
exp2((s - m) * log2 e) with the row max m: s - m is exact near the max, so the scaling to base 2
rounds only the small difference. Scaling the logits to base 2 first (s * log2 e, then - max) rounded
every logit once more at its full magnitude: at Swin V2's logits of ~100 that is ~5e-6 per logit, as
large as the fp32 reference's whole error. The forward saves the output and, per (window, head,
token), m and log2 of the row sum l apart (not m + ln l, whose rounding at ~100 would cost the same);
the backward recomputes P = exp2((s - m) * log2 e - log2 l) (flash-attention style; the product and
the - log2 l fuse into one FMA):
    dq kernel   dq, delta_i = sum_j P_ij dP_ij (exact, fp32) and the bias / mask gradient partials
    dkdv kernel dk, dv (+ the padding tokens' dk/dv sums for the qkv_bias gradient)
When all keys of a window fit in one block, delta comes for free from the registers of the dq
kernel; otherwise (long windows, global attention) the dq kernel runs a first pass over the keys
(every dtype: see the dq kernel for why not rowsum(dO * O)).

Bias gradient (deterministic, no atomics): a dq program sums dS over its windows into its own
[NP, NP] slice of `gpart [groups, chunks, heads, NP, NP]` (registers when the keys are one block,
read-add-write of its own slice otherwise); torch sums chunks, then groups/heads, in a fixed order;
`_window_attention_table_grad_kernel` folds pairs (i, j) into table entries in a fixed order. The
mask gradient is the per-group sum over heads. qkv_bias gradient: per-(window, key block) partial
sums of the padding tokens' dk/dv, summed by torch; padded queries' outputs are discarded, so
their dq (the q part of qkv_bias) is exactly zero.

Masked rows: a query row whose logits are all -inf (an additive -inf mask) gets output 0 and zero
gradients, like the reference; its max is stored as +inf so that the backward's P is 0 there.
A -inf mask over a whole key block is guarded in the online softmax.

Offsets: the batch/window term is int64; per-image offsets are int32 unless some tensor spans 2**31
elements within one image/window (`OFF64`).

Limits: head dim 1..128 (padded to a power of two >= 16 with masked loads); windows up to
MAX_WINDOW_TOKENS tokens; fp16, bf16 and fp32 (fp32 uses IEEE dots, not TF32, to match the fp32
reference); no dropout.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import interpreter_dot
from .autotune import autotune
from .window_attention_tiles import DKDV_CONFIGS, DQ_CONFIGS, FWD_CONFIGS, prune_dkdv, prune_dq, prune_fwd

_LOG2E = tl.constexpr(1.4426950408889634)  # 1 / ln 2: exp(x) = exp2(x * log2 e), exp2 is the native op
_MASK_VALUE = tl.constexpr(-100.0)  # the official Swin shift-mask value (not -inf)
MAX_WINDOW_TOKENS = 1024  # dense bias tile [kinds, heads, NP, NP] fp32 stays a few MB at most
MAX_HEAD_DIM = 128  # q/k/v/acc tiles of [BLOCK, 128] are the largest the configs budget registers for
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _np2(n: int) -> int:
    return max(16, triton.next_power_of_2(int(n)))  # tl.dot needs every dim >= 16


# ----------------------------------------------------------------------------------------------
# Capability checks (plain functions: the dispatcher asks them, the launchers assume them)
# ----------------------------------------------------------------------------------------------

def _dtype_reason(dtype, head_dim, device_type) -> Optional[str]:
    if dtype not in _DTYPES:
        return f"dtype {dtype} is not supported (float16, bfloat16, float32)"
    if dtype == torch.bfloat16 and device_type == "cpu" and not interpreter_dot.installed():
        return "bfloat16 tl.dot is broken in this Triton's CPU interpreter (fastwin's interpreter dot is not installed)"
    if not 1 <= int(head_dim) <= MAX_HEAD_DIM:
        return f"head_dim {head_dim} is not supported (1 to {MAX_HEAD_DIM})"
    return None


def supports_window(dtype, head_dim, window_size, device_type) -> Optional[str]:
    """None if the window kernels take these inputs, else why not (shifted and given windows)."""
    reason = _dtype_reason(dtype, head_dim, device_type)
    if reason is None:
        wh, ww = window_size
        if wh * ww > MAX_WINDOW_TOKENS:
            reason = f"window {wh}x{ww} has {wh * ww} tokens, more than {MAX_WINDOW_TOKENS}"
    return reason


def supports_attention(dtype, head_dim, seq_len, device_type) -> Optional[str]:
    """None if the global-attention kernels take these inputs, else why not (any sequence length)."""
    return _dtype_reason(dtype, head_dim, device_type)


# ----------------------------------------------------------------------------------------------
# Autotune configs (tile tables and prunes: window_attention_tiles.py)
# ----------------------------------------------------------------------------------------------

# Geometry ints used in scalar / mask arithmetic only: not specialized (divisibility by 16 or == 1
# would make every Swin stage a separate compile for no better code). Strides and C stay specialized.
_DNS = ["N", "H", "W", "HMOD", "WMOD", "RLIM", "CLIM", "n_wh", "n_ww", "SH", "SW", "n_batch", "n_groups", "cpk",
        "num_heads", "max_kb"]

_KEY = ["N", "HEAD_DIM", "NP", "MAP", "SHIFTED", "PADDED", "HAS_DENSE", "HAS_MASK", "HAS_PAD", "OFF64"]

# ----------------------------------------------------------------------------------------------
# Kernel helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def _group(k, n_batch, n_wh, n_ww, MAP: tl.constexpr, SHIFTED: tl.constexpr):
    """Windows of group k: (count, ny, nx, y0, x0), the block [y0, y0+ny) x [x0, x0+nx) of window
    rows/cols per image (MAP), or count = windows per group (SEQ)."""
    if MAP:
        if SHIFTED:  # kind k = 2 * (last window row) + (last window column)
            lr = k // 2
            lc = k - 2 * lr
            ny = tl.where(lr == 1, 1, n_wh - 1)
            nx = tl.where(lc == 1, 1, n_ww - 1)
            y0 = lr * (n_wh - 1)
            x0 = lc * (n_ww - 1)
        else:
            ny = n_wh + 0 * k
            nx = n_ww + 0 * k
            y0 = 0 * k
            x0 = 0 * k
        count = n_batch * ny * nx
    else:
        count = n_batch + 0 * k
        ny = 0 * k
        nx = ny
        y0 = ny
        x0 = ny
    return count, ny, nx, y0, x0


@triton.jit
def _window_at(k, j, n_groups, ny, nx, y0, x0, n_wh, n_ww, MAP: tl.constexpr):
    """(window index, batch index as int64, wy, wx) of the j-th window of group k (scalars)."""
    if MAP:
        per_img = ny * nx
        b = j // per_img
        rem = j - b * per_img
        oy = rem // nx
        wy = y0 + oy
        wx = x0 + rem - oy * nx
        win = (b * n_wh + wy) * n_ww + wx
    else:
        win = k + n_groups * j
        b = win
        wy = 0 * win
        wx = wy
    return win, b.to(tl.int64), wy, wx


@triton.jit
def _tokens(wy, wx, ty, tx, offs, N, H, W, HMOD, WMOD, RLIM, CLIM, SH, SW,
            WH: tl.constexpr, WW: tl.constexpr, MAP: tl.constexpr, PADDED: tl.constexpr):
    """(y, x, real) of tokens `offs` (in-window row ty, col tx) of window (wy, wx).

    MAP: source row/col in the H x W map (one conditional wrap: the launcher reduces the shift
    modulo HMOD/WMOD and real rows are < HMOD). SEQ: (token, 0). Non-real tokens get (0, 0).
    """
    if MAP:
        r = wy * WH + ty  # row in the padded, shifted grid
        c = wx * WW + tx
        y = r + SH
        y = tl.where(y >= HMOD, y - HMOD, y)
        x = c + SW
        x = tl.where(x >= WMOD, x - WMOD, x)
        real = offs < N
        if PADDED:
            real = real & (r < RLIM) & (c < CLIM) & (y < H) & (x < W)
        y = tl.where(real, y, 0)
        x = tl.where(real, x, 0)
    else:
        real = offs < N
        y = tl.where(real, offs, 0)
        x = offs * 0
    return y, x, real


@triton.jit
def _pos(y, x, s_y, s_x, OFF64: tl.constexpr):
    """Per-image element offset of tokens at (y, x); 64-bit when a tensor spans 2**31 elements."""
    if OFF64:
        return y.to(tl.int64) * s_y + x.to(tl.int64) * s_x
    else:
        return y * s_y + x * s_x


@triton.jit
def _load_tok(base, pos, real, in_window, ch, s_c, pad_bias, s_pb, d_ok, HAS_PAD: tl.constexpr,
              DPAD: tl.constexpr, OFF64: tl.constexpr):
    """Channels `ch` of the tokens at `pos` ([BLOCK, D_PAD]); padding tokens of the window get
    pad_bias[ch] (or 0), rows beyond the window (`in_window` false) 0: a non-finite qkv_bias must not
    reach windows without padding through those rows' zero probabilities (0 * NaN)."""
    t = tl.load(base + pos[:, None] + _chan(ch, s_c, OFF64)[None, :], mask=_rows_mask(real, d_ok, DPAD), other=0.0)
    if HAS_PAD:
        pb = tl.load(pad_bias + ch * s_pb, mask=d_ok, other=0.0)
        t = tl.where(real[:, None], t, tl.where(in_window[:, None], pb[None, :], 0.0))
    return t


@triton.jit
def _kv(q_base, wy, wx, ty, tx, offs, h, N, C, H, W, HMOD, WMOD, RLIM, CLIM, SH, SW, s_qy, s_qx, s_qc, pad_bias, s_pb,
        dd, d_ok, HEAD_DIM: tl.constexpr, WH: tl.constexpr, WW: tl.constexpr, MAP: tl.constexpr, PADDED: tl.constexpr,
        HAS_PAD: tl.constexpr, DPAD: tl.constexpr, OFF64: tl.constexpr):
    """k and v tiles [BLOCK, D_PAD] of tokens `offs` of window (wy, wx), and the tokens' (y, x, real)."""
    y, x, real = _tokens(wy, wx, ty, tx, offs, N, H, W, HMOD, WMOD, RLIM, CLIM, SH, SW, WH, WW, MAP, PADDED)
    pos = _pos(y, x, s_qy, s_qx, OFF64)
    inside = offs < N
    kt = _load_tok(q_base, pos, real, inside, C + h * HEAD_DIM + dd, s_qc, pad_bias, s_pb, d_ok, HAS_PAD, DPAD, OFF64)
    vt = _load_tok(q_base, pos, real, inside, 2 * C + h * HEAD_DIM + dd, s_qc, pad_bias, s_pb, d_ok, HAS_PAD, DPAD,
                   OFF64)
    return kt, vt, y, x, real


@triton.jit
def _mm(a, b, IEEE: tl.constexpr):
    """a @ b with fp32 accumulation; fp32 operands use IEEE products (no TF32) to match fp32 torch."""
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _bias_tile(dense_ptr, mask_ptr, offs_m, offs_n, N, s_mi, s_mj,
              NP: tl.constexpr, HAS_DENSE: tl.constexpr, HAS_MASK: tl.constexpr):
    """Additive logit tile: bias + masks, -inf at keys >= N ([BM, BN] or [1, BN])."""
    if HAS_DENSE:  # in bounds: BLOCK_M, BLOCK_N divide NP; -inf already in the key columns >= N
        b = tl.load(dense_ptr + offs_m[:, None] * NP + offs_n[None, :])
    else:
        b = tl.where((offs_n < N)[None, :], 0.0, float("-inf"))
    if HAS_MASK:
        ok = (offs_m < N)[:, None] & (offs_n < N)[None, :]
        mk = tl.load(mask_ptr + offs_m[:, None] * s_mi + offs_n[None, :] * s_mj, mask=ok, other=0.0)
        # an FMA (x * 1 + b, rounded once, as the add): triton 3.6 then builds the multi-block dq kernel
        # without the 8-byte stack frame the plain add gave it (Swin-B 384 bf16, sm_90)
        b = tl.fma(mk.to(tl.float32), 1.0, b)
    return b


@triton.jit
def _logits(q, k, scale, bias, IEEE: tl.constexpr):
    """Logits [BM, BN] fp32: scale * q @ k^T + the `_bias_tile` tile."""
    return _mm(q, tl.trans(k), IEEE) * scale + bias


@triton.jit
def _key_block(q, q_base, wy, wx, offs_n, offs_m, h, N, C, H, W, HMOD, WMOD, RLIM, CLIM, SH, SW, s_qy, s_qx, s_qc,
               pad_bias, s_pb, dd, d_ok, dense_ptr, mask_ptr, s_mi, s_mj, scale, HEAD_DIM: tl.constexpr,
               WH: tl.constexpr, WW: tl.constexpr, MAP: tl.constexpr, PADDED: tl.constexpr, HAS_PAD: tl.constexpr,
               DPAD: tl.constexpr, OFF64: tl.constexpr, NP: tl.constexpr, HAS_DENSE: tl.constexpr,
               HAS_MASK: tl.constexpr, IEEE: tl.constexpr):
    """One key block `offs_n` of a window that spans several (online softmax, dq's two passes): its k and v
    tiles [BLOCK_N, D_PAD] and the logits [BLOCK_M, BLOCK_N] of queries `offs_m` against it."""
    kt, vt, yk, xk, k_real = _kv(q_base, wy, wx, offs_n // WW, offs_n % WW, offs_n, h, N, C, H, W, HMOD, WMOD, RLIM,
                                 CLIM, SH, SW, s_qy, s_qx, s_qc, pad_bias, s_pb, dd, d_ok, HEAD_DIM, WH, WW, MAP,
                                 PADDED, HAS_PAD, DPAD, OFF64)
    s = _logits(q, kt, scale, _bias_tile(dense_ptr, mask_ptr, offs_m, offs_n, N, s_mi, s_mj, NP, HAS_DENSE, HAS_MASK),
                IEEE)
    return kt, vt, s


@triton.jit
def _row_stats(lse, row, offs_m, N):
    """(row max m, natural units; log2 of the row's sum) saved by the forward; row = (window * heads + head) * N."""
    stat = lse + 2 * row
    m = tl.load(stat + offs_m, mask=offs_m < N, other=float("inf"))
    ll = tl.load(stat + N + offs_m, mask=offs_m < N, other=0.0)
    return m, ll


@triton.jit
def _finite_max(m):
    """The row max m, 0 for a row whose logits are all -inf (so p = 0 there, not NaN)."""
    return tl.where(m == float("-inf"), 0.0, m)


@triton.jit
def _exp_shifted(s, m):
    """exp(s - m) [BM, BN] as exp2((s - m) * log2 e): s - m is exact near the max (Sterbenz), so the
    scaling to base 2 rounds only the small difference (the module docstring says why not s * log2 e)."""
    return tl.exp2((s - m[:, None]) * _LOG2E)


@triton.jit
def _probs(s, m, ll):
    """P = exp2((s - m) * log2 e - log2 l) for the backward, from the forward's row max m (natural
    units) and log2 l, the forward's `_exp_shifted` with the scaling and - log2 l in one FMA (the
    instruction count of a base-2 s - m - log2 l). An all -inf row has m = +inf and gets P = 0."""
    return tl.exp2(tl.fma(s - m[:, None], _LOG2E, -ll[:, None]))


@triton.jit
def _kind(k, SHIFTED: tl.constexpr):
    """Dense-bias kind of group k: the group itself when shifted (4 kinds), else the only kind."""
    if SHIFTED:
        return k
    else:
        return 0 * k


@triton.jit
def _rows_mask(real, d_ok, DPAD: tl.constexpr):
    """[BLOCK, 1] or [BLOCK, D_PAD] store/load mask of real tokens (and real channels)."""
    if DPAD:
        return real[:, None] & d_ok[None, :]
    else:
        return real[:, None]


@triton.jit
def _chan(ch, s_c, OFF64: tl.constexpr):
    if OFF64:
        return ch.to(tl.int64) * s_c
    else:
        return ch * s_c


@triton.jit
def _program(num_heads, cpk, n_batch, n_wh, n_ww, n_blk, MAP: tl.constexpr, SHIFTED: tl.constexpr):
    """Decode program_id(0) = ((group * cpk + chunk) * n_blk + block) * heads + head.

    Returns (group, head, block, first window j0 of the chunk, its window count, group geometry).
    Heads are fastest so the programs of one window run together and share its cache lines.
    """
    pid = tl.program_id(0)
    h = pid % num_heads
    rest = pid // num_heads
    blk = rest % n_blk
    rest = rest // n_blk
    chunk = rest % cpk
    k = rest // cpk
    count, ny, nx, y0, x0 = _group(k, n_batch, n_wh, n_ww, MAP, SHIFTED)
    wpp = tl.cdiv(count, cpk)
    j0 = chunk * wpp
    n_here = tl.minimum(wpp, count - j0)
    return k, h, blk, chunk, j0, n_here, ny, nx, y0, x0


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _window_attention_dense_bias_kernel(
    table, dense, N, SH, SW, num_heads, s_tt, s_th,
    WH: tl.constexpr, WW: tl.constexpr, NP: tl.constexpr, HAS_TABLE: tl.constexpr, SHIFTED: tl.constexpr,
    BLOCK_I: tl.constexpr,
):
    """dense[kind, h, i, j] = table[index(i, j), h] + shift mask of `kind`, -inf for j >= N.

    Region ids follow the official slices (0, -win), (-win, -shift), (-shift, None) of the padded
    grid: a window off the last window row has row region 0; on it, 1 or 2 (2 for the last `shift`
    rows). Grid: (kinds * heads, NP // BLOCK_I).
    """
    kh = tl.program_id(0)
    kind = kh // num_heads
    h = kh - kind * num_heads
    i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    j = tl.arange(0, NP)
    valid = (i < N)[:, None] & (j < N)[None, :]
    val = tl.zeros([BLOCK_I, NP], tl.float32)
    if HAS_TABLE:
        idx = ((i // WW)[:, None] - (j // WW)[None, :] + (WH - 1)) * (2 * WW - 1) \
            + ((i % WW)[:, None] - (j % WW)[None, :] + (WW - 1))
        idx = tl.where(valid, idx, 0)
        val += tl.load(table + idx * s_tt + h * s_th, mask=valid, other=0.0).to(tl.float32)
    if SHIFTED:
        lr = kind // 2
        lc = kind - 2 * lr
        ri = lr * (1 + ((SH > 0) & ((i // WW) >= WH - SH)).to(tl.int32)) * 3 \
            + lc * (1 + ((SW > 0) & ((i % WW) >= WW - SW)).to(tl.int32))
        rj = lr * (1 + ((SH > 0) & ((j // WW) >= WH - SH)).to(tl.int32)) * 3 \
            + lc * (1 + ((SW > 0) & ((j % WW) >= WW - SW)).to(tl.int32))
        val += tl.where(ri[:, None] != rj[None, :], _MASK_VALUE, 0.0)
    val = tl.where((j < N)[None, :], val, float("-inf"))
    base = (kind * num_heads + h).to(tl.int64) * NP * NP
    tl.store(dense + base + i[:, None] * NP + j[None, :], val)


@autotune(FWD_CONFIGS, _KEY, prune_fwd)
@triton.jit(do_not_specialize=_DNS)
def _window_attention_fwd_kernel(
    qkv, pad_bias, dense, mask, out, lse,
    N, C, H, W, HMOD, WMOD, RLIM, CLIM, n_wh, n_ww, SH, SW, n_batch, n_groups, cpk, num_heads,
    s_qb, s_qy, s_qx, s_qc, s_pb,  # qkv (MAP: b, h, w, c; SEQ: b, n, 0, c), qkv_bias
    s_ob, s_oy, s_ox,  # out (channel stride 1)
    s_mw, s_mi, s_mj, scale,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, NP: tl.constexpr, WH: tl.constexpr, WW: tl.constexpr,
    MAP: tl.constexpr, SHIFTED: tl.constexpr, PADDED: tl.constexpr, HAS_DENSE: tl.constexpr,
    HAS_MASK: tl.constexpr, HAS_PAD: tl.constexpr, OFF64: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HOIST: tl.constexpr,
):
    """out, lse for BLOCK_M queries of every window of one (group, chunk, head)."""
    k, h, mb, chunk, j0, n_here, ny, nx, y0, x0 = _program(num_heads, cpk, n_batch, n_wh, n_ww, tl.cdiv(N, BLOCK_M),
                                                          MAP, SHIFTED)
    offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    ty_m = offs_m // WW
    tx_m = offs_m % WW
    dd = tl.arange(0, D_PAD)
    d_ok = dd < HEAD_DIM
    DPAD: tl.constexpr = D_PAD != HEAD_DIM
    ONE_BLOCK: tl.constexpr = BLOCK_N >= NP
    dense_ptr = dense
    if HAS_DENSE:  # the kind is the group when shifted, else the only kind
        dense_ptr = dense + _kind(k, SHIFTED) * num_heads * NP * NP + h * NP * NP
    mask_ptr = mask
    if HAS_MASK:  # SEQ: group k holds the windows that use mask[k]
        mask_ptr = mask + k.to(tl.int64) * s_mw
    offs_n0 = tl.arange(0, BLOCK_N)
    ty_n0 = offs_n0 // WW
    tx_n0 = offs_n0 % WW
    # the bias tile is the same for every window of the program; a gathered mask always pays to hoist
    HOIST_BIAS: tl.constexpr = ONE_BLOCK and (HOIST or HAS_MASK)
    if HOIST_BIAS:
        bias0 = _bias_tile(dense_ptr, mask_ptr, offs_m, offs_n0, N, s_mi, s_mj, NP, HAS_DENSE, HAS_MASK)
    for jj in range(0, n_here):
        win, b, wy, wx = _window_at(k, j0 + jj, n_groups, ny, nx, y0, x0, n_wh, n_ww, MAP)
        yq, xq, q_real = _tokens(wy, wx, ty_m, tx_m, offs_m, N, H, W, HMOD, WMOD, RLIM, CLIM, SH, SW, WH, WW,
                                 MAP, PADDED)
        q_base = qkv + b * s_qb
        q = _load_tok(q_base, _pos(yq, xq, s_qy, s_qx, OFF64), q_real, offs_m < N, h * HEAD_DIM + dd, s_qc,
                      pad_bias, s_pb, d_ok, HAS_PAD, DPAD, OFF64)
        if ONE_BLOCK:  # all keys in one block: plain softmax, no rescaling
            kt, vt, yk, xk, k_real = _kv(q_base, wy, wx, ty_n0, tx_n0, offs_n0, h, N, C, H, W, HMOD, WMOD, RLIM, CLIM,
                                         SH, SW, s_qy, s_qx, s_qc, pad_bias, s_pb, dd, d_ok, HEAD_DIM, WH, WW, MAP,
                                         PADDED, HAS_PAD, DPAD, OFF64)
            if HOIST_BIAS:
                bias = bias0
            else:
                bias = _bias_tile(dense_ptr, mask_ptr, offs_m, offs_n0, N, s_mi, s_mj, NP, HAS_DENSE, HAS_MASK)
            s = _logits(q, kt, scale, bias, IEEE)
            m_i = tl.max(s, 1)
            p = _exp_shifted(s, _finite_max(m_i))
            l_i = tl.sum(p, 1)
            acc = _mm(p.to(vt.dtype), vt, IEEE)
        else:  # online softmax over key blocks
            m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
            l_i = tl.zeros([BLOCK_M], tl.float32)
            acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
            for start_n in range(0, N, BLOCK_N):
                offs_n = start_n + offs_n0
                kt, vt, s = _key_block(q, q_base, wy, wx, offs_n, offs_m, h, N, C, H, W, HMOD, WMOD, RLIM, CLIM, SH, SW,
                                       s_qy, s_qx, s_qc, pad_bias, s_pb, dd, d_ok, dense_ptr, mask_ptr, s_mi, s_mj,
                                       scale, HEAD_DIM, WH, WW, MAP, PADDED, HAS_PAD, DPAD, OFF64, NP, HAS_DENSE,
                                       HAS_MASK, IEEE)
                m_new = tl.maximum(m_i, tl.max(s, 1))
                m_use = _finite_max(m_new)  # all -inf so far: keep p = 0, not NaN
                # 0 while m_i = -inf (nothing seen yet). tl.exp is the same exp2 of the scaled difference;
                # written as exp2((m_i - m_use) * log2 e), triton 3.6 gave the fp32 build (Swin-T, 4 warps,
                # 32 x 32 tiles, sm_90) a 16-byte stack frame
                alpha = tl.exp(m_i - m_use)
                p = _exp_shifted(s, m_use)
                l_i = l_i * alpha + tl.sum(p, 1)
                acc = acc * alpha[:, None] + _mm(p.to(vt.dtype), vt, IEEE)
                m_i = m_new
        empty = l_i == 0.0  # every logit -inf: output 0 (as the reference), lse +inf
        acc = acc / tl.where(empty, 1.0, l_i)[:, None]
        tl.store(out + b * s_ob + _pos(yq, xq, s_oy, s_ox, OFF64)[:, None] + (h * HEAD_DIM + dd)[None, :],
                 acc.to(out.dtype.element_ty), mask=_rows_mask(q_real, d_ok, DPAD))
        # the row max and log2 of the sum apart (see _probs): m is +inf for an all -inf row
        stat = lse + (win.to(tl.int64) * num_heads + h) * (2 * N)
        tl.store(stat + offs_m, tl.where(empty, float("inf"), m_i), mask=offs_m < N)
        tl.store(stat + N + offs_m, tl.log2(tl.where(empty, 1.0, l_i)), mask=offs_m < N)


@autotune(DQ_CONFIGS, _KEY + ["BIAS_GRAD"], prune_dq)
@triton.jit(do_not_specialize=_DNS)
def _window_attention_bwd_dq_kernel(
    qkv, pad_bias, dense, mask, dout, lse, delta, dqkv, gpart,
    N, C, H, W, HMOD, WMOD, RLIM, CLIM, n_wh, n_ww, SH, SW, n_batch, n_groups, cpk, num_heads,
    s_qb, s_qy, s_qx, s_qc, s_pb,
    s_gb, s_gy, s_gx, s_gc,  # dout
    s_db, s_dy, s_dx,  # dqkv (channel stride 1)
    s_mw, s_mi, s_mj, scale,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, NP: tl.constexpr, WH: tl.constexpr, WW: tl.constexpr,
    MAP: tl.constexpr, SHIFTED: tl.constexpr, PADDED: tl.constexpr, HAS_DENSE: tl.constexpr,
    HAS_MASK: tl.constexpr, HAS_PAD: tl.constexpr, OFF64: tl.constexpr, IEEE: tl.constexpr,
    BIAS_GRAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HOIST: tl.constexpr,
):
    """dq and delta for BLOCK_M queries of the windows of one (group, chunk, head); dS partials.

    gpart [groups, cpk, heads, NP, NP] fp32 (zeroed): this program's slice gets the sum of dS over its
    windows (stored, never accumulated across launches, so autotuning reruns are harmless).
    """
    k, h, mb, chunk, j0, n_here, ny, nx, y0, x0 = _program(num_heads, cpk, n_batch, n_wh, n_ww, tl.cdiv(N, BLOCK_M),
                                                          MAP, SHIFTED)
    offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    ty_m = offs_m // WW
    tx_m = offs_m % WW
    dd = tl.arange(0, D_PAD)
    d_ok = dd < HEAD_DIM
    DPAD: tl.constexpr = D_PAD != HEAD_DIM
    ONE_BLOCK: tl.constexpr = BLOCK_N >= NP
    dense_ptr = dense
    if HAS_DENSE:
        dense_ptr = dense + _kind(k, SHIFTED) * num_heads * NP * NP + h * NP * NP
    mask_ptr = mask
    if HAS_MASK:
        mask_ptr = mask + k.to(tl.int64) * s_mw
    g_ptr = gpart + ((k * cpk + chunk).to(tl.int64) * num_heads + h) * NP * NP
    offs_n0 = tl.arange(0, BLOCK_N)
    ty_n0 = offs_n0 // WW
    tx_n0 = offs_n0 % WW
    g = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)  # sum of dS over the windows (one key block only)
    HOIST_BIAS: tl.constexpr = ONE_BLOCK and (HOIST or HAS_MASK)
    if HOIST_BIAS:
        bias0 = _bias_tile(dense_ptr, mask_ptr, offs_m, offs_n0, N, s_mi, s_mj, NP, HAS_DENSE, HAS_MASK)
    for jj in range(0, n_here):
        win, b, wy, wx = _window_at(k, j0 + jj, n_groups, ny, nx, y0, x0, n_wh, n_ww, MAP)
        yq, xq, q_real = _tokens(wy, wx, ty_m, tx_m, offs_m, N, H, W, HMOD, WMOD, RLIM, CLIM, SH, SW, WH, WW,
                                 MAP, PADDED)
        q_base = qkv + b * s_qb
        q = _load_tok(q_base, _pos(yq, xq, s_qy, s_qx, OFF64), q_real, offs_m < N, h * HEAD_DIM + dd, s_qc,
                      pad_bias, s_pb, d_ok, HAS_PAD, DPAD, OFF64)
        # padding tokens' outputs are cropped away: their dO (and so dS and dq) is zero
        do = tl.load(dout + b * s_gb + _pos(yq, xq, s_gy, s_gx, OFF64)[:, None]
                     + _chan(h * HEAD_DIM + dd, s_gc, OFF64)[None, :], mask=_rows_mask(q_real, d_ok, DPAD), other=0.0)
        row = (win.to(tl.int64) * num_heads + h) * N
        m_row, ll2 = _row_stats(lse, row, offs_m, N)
        if ONE_BLOCK:
            kt, vt, yk, xk, k_real = _kv(q_base, wy, wx, ty_n0, tx_n0, offs_n0, h, N, C, H, W, HMOD, WMOD, RLIM, CLIM,
                                         SH, SW, s_qy, s_qx, s_qc, pad_bias, s_pb, dd, d_ok, HEAD_DIM, WH, WW, MAP,
                                         PADDED, HAS_PAD, DPAD, OFF64)
            if HOIST_BIAS:
                bias = bias0
            else:
                bias = _bias_tile(dense_ptr, mask_ptr, offs_m, offs_n0, N, s_mi, s_mj, NP, HAS_DENSE, HAS_MASK)
            s = _logits(q, kt, scale, bias, IEEE)
            p = _probs(s, m_row, ll2)
            dp = _mm(do, tl.trans(vt), IEEE)
            dlt = tl.sum(p * dp, 1)  # exact fp32 delta_i = sum_j P_ij dP_ij
            ds = p * (dp - dlt[:, None])
            dq = _mm(ds.to(kt.dtype), kt, IEEE)
            if BIAS_GRAD:
                g += ds
        else:
            # delta_i = sum_j P_ij dP_ij by a first pass over the keys, in every dtype: rowsum(dO * O)
            # is the same sum in exact arithmetic, but under a saturated softmax (Swin V2 logits of
            # ~100) dS = P (dP - delta) cancels, and O's rounding then doubled fp32 dq errors
            dlt = tl.zeros([BLOCK_M], tl.float32)
            for start_n in range(0, N, BLOCK_N):
                offs_n = start_n + offs_n0
                kt, vt, s = _key_block(q, q_base, wy, wx, offs_n, offs_m, h, N, C, H, W, HMOD, WMOD, RLIM, CLIM, SH, SW,
                                       s_qy, s_qx, s_qc, pad_bias, s_pb, dd, d_ok, dense_ptr, mask_ptr, s_mi, s_mj,
                                       scale, HEAD_DIM, WH, WW, MAP, PADDED, HAS_PAD, DPAD, OFF64, NP, HAS_DENSE,
                                       HAS_MASK, IEEE)
                dlt += tl.sum(_probs(s, m_row, ll2) * _mm(do, tl.trans(vt), IEEE), 1)
            dq = tl.zeros([BLOCK_M, D_PAD], tl.float32)
            for start_n in range(0, N, BLOCK_N):
                offs_n = start_n + offs_n0
                kt, vt, s = _key_block(q, q_base, wy, wx, offs_n, offs_m, h, N, C, H, W, HMOD, WMOD, RLIM, CLIM, SH, SW,
                                       s_qy, s_qx, s_qc, pad_bias, s_pb, dd, d_ok, dense_ptr, mask_ptr, s_mi, s_mj,
                                       scale, HEAD_DIM, WH, WW, MAP, PADDED, HAS_PAD, DPAD, OFF64, NP, HAS_DENSE,
                                       HAS_MASK, IEEE)
                p = _probs(s, m_row, ll2)
                ds = p * (_mm(do, tl.trans(vt), IEEE) - dlt[:, None])
                dq += _mm(ds.to(kt.dtype), kt, IEEE)
                if BIAS_GRAD:  # this program's own slice, no other writer: first window stores, later ones add
                    gp = g_ptr + offs_m[:, None] * NP + offs_n[None, :]
                    tl.store(gp, tl.load(gp, mask=(offs_m >= 0)[:, None] & (jj > 0), other=0.0) + ds)
        tl.store(delta + row + offs_m, dlt, mask=offs_m < N)
        dq = dq * scale
        tl.store(dqkv + b * s_db + _pos(yq, xq, s_dy, s_dx, OFF64)[:, None] + (h * HEAD_DIM + dd)[None, :],
                 dq.to(dqkv.dtype.element_ty), mask=_rows_mask(q_real, d_ok, DPAD))
    if BIAS_GRAD:
        if ONE_BLOCK:
            tl.store(g_ptr + offs_m[:, None] * NP + offs_n0[None, :], g)


@autotune(DKDV_CONFIGS, _KEY + ["PAD_GRAD"], prune_dkdv)
@triton.jit(do_not_specialize=_DNS)
def _window_attention_bwd_dkdv_kernel(
    qkv, pad_bias, dense, mask, dout, lse, delta, dqkv, dpad_part,
    N, C, H, W, HMOD, WMOD, RLIM, CLIM, n_wh, n_ww, SH, SW, n_batch, n_groups, cpk, num_heads, max_kb,
    s_qb, s_qy, s_qx, s_qc, s_pb,
    s_gb, s_gy, s_gx, s_gc,  # dout
    s_db, s_dy, s_dx,  # dqkv (channel stride 1)
    s_mw, s_mi, s_mj, scale,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, NP: tl.constexpr, WH: tl.constexpr, WW: tl.constexpr,
    MAP: tl.constexpr, SHIFTED: tl.constexpr, PADDED: tl.constexpr, HAS_DENSE: tl.constexpr,
    HAS_MASK: tl.constexpr, HAS_PAD: tl.constexpr, OFF64: tl.constexpr, IEEE: tl.constexpr,
    PAD_GRAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HOIST: tl.constexpr,
):
    """dk, dv for one block of BLOCK_N keys of the windows of one (group, chunk, head)."""
    k, h, nb, chunk, j0, n_here, ny, nx, y0, x0 = _program(num_heads, cpk, n_batch, n_wh, n_ww, tl.cdiv(N, BLOCK_N),
                                                          MAP, SHIFTED)
    offs_n = nb * BLOCK_N + tl.arange(0, BLOCK_N)
    ty_n = offs_n // WW
    tx_n = offs_n % WW
    dd = tl.arange(0, D_PAD)
    d_ok = dd < HEAD_DIM
    DPAD: tl.constexpr = D_PAD != HEAD_DIM
    dense_ptr = dense
    if HAS_DENSE:
        dense_ptr = dense + _kind(k, SHIFTED) * num_heads * NP * NP + h * NP * NP
    mask_ptr = mask
    if HAS_MASK:
        mask_ptr = mask + k.to(tl.int64) * s_mw
    offs_m0 = tl.arange(0, BLOCK_M)
    ONE_QBLOCK: tl.constexpr = BLOCK_M >= NP
    HOIST_BIAS: tl.constexpr = ONE_QBLOCK and (HOIST or HAS_MASK)
    if HOIST_BIAS:  # one query block: its bias tile is the same for every window of the program
        bias0 = _bias_tile(dense_ptr, mask_ptr, offs_m0, offs_n, N, s_mi, s_mj, NP, HAS_DENSE, HAS_MASK)
    for jj in range(0, n_here):
        win, b, wy, wx = _window_at(k, j0 + jj, n_groups, ny, nx, y0, x0, n_wh, n_ww, MAP)
        q_base = qkv + b * s_qb
        kt, vt, yk, xk, k_real = _kv(q_base, wy, wx, ty_n, tx_n, offs_n, h, N, C, H, W, HMOD, WMOD, RLIM, CLIM, SH, SW,
                                     s_qy, s_qx, s_qc, pad_bias, s_pb, dd, d_ok, HEAD_DIM, WH, WW, MAP, PADDED, HAS_PAD,
                                     DPAD, OFF64)
        dk = tl.zeros([BLOCK_N, D_PAD], tl.float32)
        dv = tl.zeros([BLOCK_N, D_PAD], tl.float32)
        row = (win.to(tl.int64) * num_heads + h) * N
        for start_m in range(0, 1 if ONE_QBLOCK else N, BLOCK_M):
            offs_m = start_m + offs_m0
            yq, xq, q_real = _tokens(wy, wx, offs_m // WW, offs_m % WW, offs_m, N, H, W, HMOD, WMOD, RLIM, CLIM,
                                     SH, SW, WH, WW, MAP, PADDED)
            q = _load_tok(q_base, _pos(yq, xq, s_qy, s_qx, OFF64), q_real, offs_m < N, h * HEAD_DIM + dd, s_qc,
                          pad_bias, s_pb, d_ok, HAS_PAD, DPAD, OFF64)
            do = tl.load(dout + b * s_gb + _pos(yq, xq, s_gy, s_gx, OFF64)[:, None]
                         + _chan(h * HEAD_DIM + dd, s_gc, OFF64)[None, :], mask=_rows_mask(q_real, d_ok, DPAD),
                         other=0.0)
            m_row, ll2 = _row_stats(lse, row, offs_m, N)
            dlt = tl.load(delta + row + offs_m, mask=offs_m < N, other=0.0)
            if HOIST_BIAS:
                bias = bias0
            else:
                bias = _bias_tile(dense_ptr, mask_ptr, offs_m, offs_n, N, s_mi, s_mj, NP, HAS_DENSE, HAS_MASK)
            p = _probs(_logits(q, kt, scale, bias, IEEE), m_row, ll2)  # [BM, BN]
            dv += _mm(tl.trans(p.to(do.dtype)), do, IEEE)
            ds = p * (_mm(do, tl.trans(vt), IEEE) - dlt[:, None])
            dk += _mm(tl.trans(ds.to(q.dtype)), q, IEEE)
        dk = dk * scale
        d_ptrs = dqkv + b * s_db + _pos(yk, xk, s_dy, s_dx, OFF64)[:, None] + (h * HEAD_DIM + dd)[None, :]
        tl.store(d_ptrs + C, dk.to(dqkv.dtype.element_ty), mask=_rows_mask(k_real, d_ok, DPAD))
        tl.store(d_ptrs + 2 * C, dv.to(dqkv.dtype.element_ty), mask=_rows_mask(k_real, d_ok, DPAD))
        if PAD_GRAD:
            # dpad_part: [windows, max_kb, heads, 2, D_PAD] fp32 (zeroed: unused slots stay 0)
            pad = ((offs_n < N) & (k_real == 0))[:, None]
            slot = ((win.to(tl.int64) * max_kb + nb) * num_heads + h) * 2 * D_PAD
            tl.store(dpad_part + slot + dd, tl.sum(tl.where(pad, dk, 0.0), 0))
            tl.store(dpad_part + slot + D_PAD + dd, tl.sum(tl.where(pad, dv, 0.0), 0))


@triton.jit
def _window_attention_table_grad_kernel(
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
