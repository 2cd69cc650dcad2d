"""Triton depthwise 2-D convolution (UniFormer position embedding / local aggregator), fwd + bwd.

Computes `y = dwconv(x) (+ bias) (+ x)`: stride 1, "same" zero padding, odd square kernel K <= 7
(any odd K works; K is a `tl.constexpr`, so each size compiles its own kernel).

Layouts. Every kernel addresses tensors through four explicit logical strides `(b, c, h, w)`, so one
kernel family serves
    * "NCHW" contiguous           [B, C, H, W], strides (CHW, HW, W, 1),
    * "NCHW" channels-last memory [B, C, H, W], strides (HWC, 1, WC, C),
    * "NHWC"                      [B, H, W, C], whose logical (b, c, h, w) strides are (HWC, 1, WC, C),
    * any other strides (non-contiguous views) at the price of uncoalesced loads.
Triton specializes integer arguments equal to 1, so when the channel stride is 1 the compiler knows
the channel axis is contiguous and vectorizes loads along it.

Tiling. A program owns a tile of BLOCK_P pixels (flattened over batch and space, p = (b*H + h)*W + w)
by BLOCK_C channels and walks the K*K taps, loading the shifted input tile (masked at the map border
and at the tile edges) and accumulating in fp32. Storage may be fp16, bf16 or fp32.

Backward.
    * grad input = the same kernel run on grad_out with the flipped kernel (`SIGN = -1`), plus
      grad_out itself when the forward had the residual;
    * grad weight / grad bias are reductions over batch and space. They are deterministic (no
      atomics): pass 1 (`_dwconv2d_bwd_wgrad_kernel`) gives each program a fixed contiguous range of
      pixels (`pix_per_split`, chosen from the shape only) and one channel block, and writes its fp32
      partial sums to a `[n_splits, K*K + 1, C]` buffer (row K*K holds the bias); pass 2
      (`_sum_rows_kernel`) sums that buffer over splits in increasing order. Results are bitwise
      reproducible run to run for a given shape and autotuned config.

Limits. Element offsets are int64 (the batch term promotes them); per-item products such as h*stride
are int32 (C*H*W < 2**31). Tiles are <= 8 fp32 elements per lane and the tap loop is rolled over
kernel rows: compiled for sm_90 (ptxas, triton 3.9) that keeps K = 7 at ~130 registers without
spills. Launchers expect arguments validated by `fastwin.ops` (shapes, dtypes, odd K, same device).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreting, launch
from .autotune import autotune

MAX_KERNEL = 7  # largest kernel the launchers accept (register budget of the wgrad tap tile)


# ----------------------------------------------------------------------------------------------
# Autotune configs and prune filters
# ----------------------------------------------------------------------------------------------
def _tile_configs(p_sizes, c_sizes, min_elems, max_elems):
    """Configs over (BLOCK_P, BLOCK_C) with <= 8 fp32 tile elements per thread."""
    configs = []
    for bp in p_sizes:
        for bc in c_sizes:
            if min_elems <= bp * bc <= max_elems:
                warps = max(1, min(8, bp * bc // 256))  # 256 elements per warp = 8 per lane
                configs.append(triton.Config({"BLOCK_P": bp, "BLOCK_C": bc}, num_warps=warps))
    return configs


def _pick_for_interpreter(configs, n_pix, n_chan):
    """The config that covers the problem in the fewest programs (smallest tile on ties)."""

    def cost(cfg):
        kw = cfg.kwargs
        return (triton.cdiv(n_pix, kw["BLOCK_P"]) * triton.cdiv(n_chan, kw.get("BLOCK_C", n_chan)),
                kw["BLOCK_P"] * kw.get("BLOCK_C", 1))

    return [min(configs, key=cost)]


def _prune_conv(configs, nargs, **kwargs):
    """Drop tiles larger than the problem (all-masked lanes) in either dimension.

    fp32 kernels of 5x5 and larger keep tiles of <= 1024 elements (<= 4 warps): the 2048-element,
    8-warp tiles spilled a register on sm_90 (benchmarks/kernel_resources.py, channels-last 5x5).
    """
    k = kwargs["K"] if "K" in kwargs else nargs["K"]
    n_pix, n_chan = nargs["n_pix"], nargs["C"]
    cmax = max(8, triton.next_power_of_2(n_chan))
    pmax = max(16, triton.next_power_of_2(n_pix))
    emax = 1024 if nargs["x_ptr"].element_size() == 4 and k >= 5 else 2048
    kept = [c for c in configs if c.kwargs["BLOCK_C"] <= cmax and c.kwargs["BLOCK_P"] <= pmax
            and c.kwargs["BLOCK_P"] * c.kwargs["BLOCK_C"] <= emax]
    kept = kept or configs[:1]
    return _pick_for_interpreter(kept, n_pix, n_chan) if interpreting() else kept


def _prune_wgrad(configs, nargs, **kwargs):
    """Like `_prune_conv`, and keep the [BLOCK_P, taps, BLOCK_C] gather tile within registers."""
    k = kwargs["K"] if "K" in kwargs else nargs["K"]  # constexprs arrive as keyword arguments
    taps = triton.next_power_of_2(k * k)
    n_pix, n_chan = nargs["pix_per_split"], nargs["C"]
    cmax = max(8, triton.next_power_of_2(n_chan))
    pmax = max(4, triton.next_power_of_2(n_pix))
    kept = [
        c for c in configs
        if c.kwargs["BLOCK_C"] <= cmax and c.kwargs["BLOCK_P"] <= pmax
        # <= 32 gathered fp32 per lane (32 lanes/warp): at 64 per lane the sm_90 build spilled
        # (255 registers + 24-56 B stack, benchmarks/kernel_resources.py)
        and c.kwargs["BLOCK_P"] * taps * c.kwargs["BLOCK_C"] <= 32 * 32 * c.num_warps
    ]
    kept = kept or [min(configs, key=lambda c: c.kwargs["BLOCK_P"] * c.kwargs["BLOCK_C"])]
    return _pick_for_interpreter(kept, n_pix, n_chan) if interpreting() else kept


# <= 2048-element tiles at 8 elements per lane: ~130 registers for K = 7 on sm_90, no spills
_CONV_CONFIGS = _tile_configs((16, 32, 64, 128, 256), (8, 16, 32, 64, 128), 256, 2048)
_WGRAD_CONFIGS = [
    triton.Config({"BLOCK_P": bp, "BLOCK_C": bc}, num_warps=w)
    for bp in (4, 8, 16, 32) for bc in (8, 16, 32, 64) for w in (4, 8)
]


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------
@autotune(_CONV_CONFIGS, ["C", "n_pix", "H", "W", "K", "x_sc", "y_sc"], _prune_conv)
@triton.jit
def _dwconv2d_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    C, H, W, n_pix,
    x_sb, x_sc, x_sh, x_sw,
    y_sb, y_sc, y_sh, y_sw,
    w_sc, w_sh, w_sw,
    K: tl.constexpr, SIGN: tl.constexpr, HAS_BIAS: tl.constexpr, RESIDUAL: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """y[b,c,h,w] = sum_ij x[b,c,h+SIGN*(i-K//2),w+SIGN*(j-K//2)] * w[c,i,j] (+ bias[c]) (+ x[b,c,h,w]).

    SIGN = 1 is the convolution (cross-correlation, as F.conv2d); SIGN = -1 applies the flipped
    kernel, which is the gradient with respect to the input.
    """
    PAD: tl.constexpr = K // 2
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    p_ok = p < n_pix
    c_ok = c < C
    hw = H * W
    b = p // hw
    h = (p - b * hw) // W
    w = p - b * hw - h * W
    # One [BLOCK_P, BLOCK_C] offset tensor; each tap adds a scalar to it, so the compiler can form
    # tap addresses just before their loads instead of keeping K pointer tiles live.
    x_off = (b.to(tl.int64) * x_sb + h * x_sh + w * x_sw)[:, None] + (c * x_sc)[None, :]
    c_mask = c_ok[None, :]
    mask = p_ok[:, None] & c_mask

    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for i in range(K):  # rolled: unrolling all K*K taps hoists every load and spills (sm_90)
        di = SIGN * (i - PAD)
        hi = h + di
        row_ok = p_ok & (hi >= 0) & (hi < H)
        for j in tl.static_range(K):
            dj = SIGN * (j - PAD)
            wj = w + dj
            ok = row_ok & (wj >= 0) & (wj < W)
            v = tl.load(x_ptr + x_off + (di * x_sh + dj * x_sw), mask=ok[:, None] & c_mask, other=0.0)
            wt = tl.load(w_ptr + c * w_sc + i * w_sh + j * w_sw, mask=c_ok, other=0.0)
            acc += v.to(tl.float32) * wt.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    if RESIDUAL:
        acc += tl.load(x_ptr + x_off, mask=mask, other=0.0).to(tl.float32)
    y_off = (b.to(tl.int64) * y_sb + h * y_sh + w * y_sw)[:, None] + (c * y_sc)[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=mask)


@autotune(_WGRAD_CONFIGS, ["C", "n_pix", "H", "W", "K", "pix_per_split", "x_sc", "g_sc"], _prune_wgrad)
@triton.jit
def _dwconv2d_bwd_wgrad_kernel(
    x_ptr, g_ptr, part_ptr,
    C, H, W, n_pix, pix_per_split,
    x_sb, x_sc, x_sh, x_sw,
    g_sb, g_sc, g_sh, g_sw,
    K: tl.constexpr, TAPS: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Partial grad weight/bias of split `program_id(0)`, channel block `program_id(1)`.

    part[s, i*K + j, c] = sum_{p in split s} g[p, c] * x[p shifted by (i-K//2, j-K//2), c]
    part[s, K*K, c]     = sum_{p in split s} g[p, c]
    All K*K taps are gathered at once as a [BLOCK_P, TAPS, BLOCK_C] tile (TAPS = K*K rounded up to a
    power of two), so grad_out is read once per pixel and the shifted inputs hit in cache.
    """
    PAD: tl.constexpr = K // 2
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    t = tl.arange(0, TAPS)
    t_ok = t < K * K
    di = t // K - PAD
    dj = t % K - PAD
    hw = H * W
    start = pid_s * pix_per_split
    end = tl.minimum(start + pix_per_split, n_pix)

    acc_w = tl.zeros([TAPS, BLOCK_C], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_C], dtype=tl.float32)
    for p0 in range(start, end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        p_ok = p < end
        b = p // hw
        h = (p - b * hw) // W
        w = p - b * hw - h * W
        b64 = b.to(tl.int64)
        g_off = (b64 * g_sb + h * g_sh + w * g_sw)[:, None] + (c * g_sc)[None, :]
        g = tl.load(g_ptr + g_off, mask=p_ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
        acc_b += tl.sum(g, axis=0)
        hi = h[:, None] + di[None, :]  # [BLOCK_P, TAPS]
        wj = w[:, None] + dj[None, :]
        ok = p_ok[:, None] & t_ok[None, :] & (hi >= 0) & (hi < H) & (wj >= 0) & (wj < W)
        x_off = (b64 * x_sb)[:, None] + hi * x_sh + wj * x_sw
        xs = tl.load(x_ptr + x_off[:, :, None] + (c * x_sc)[None, None, :],
                     mask=ok[:, :, None] & c_ok[None, None, :], other=0.0).to(tl.float32)
        acc_w += tl.sum(xs * g[:, None, :], axis=0)
    row = part_ptr + pid_s * ((K * K + 1) * C)  # < 2**31: splits and C are bounded
    tl.store(row + t[:, None] * C + c[None, :], acc_w, mask=t_ok[:, None] & c_ok[None, :])
    tl.store(row + K * K * C + c, acc_b, mask=c_ok)


@triton.jit
def _sum_rows_kernel(part_ptr, out_ptr, n_rows, n_cols, BLOCK: tl.constexpr):
    """out[j] = sum_r part[r, j] in increasing r: the fixed-order second pass of every reduction."""
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < n_cols
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for r in range(0, n_rows):
        acc += tl.load(part_ptr + r * n_cols + cols, mask=ok, other=0.0)
    tl.store(out_ptr + cols, acc.to(out_ptr.dtype.element_ty), mask=ok)


# ----------------------------------------------------------------------------------------------
# Launchers (`launch.run` launches, skipping fake tensors); tensors must be validated already.
# ----------------------------------------------------------------------------------------------
_SUM_BLOCK = 256  # columns per program of the fixed-order reduction
_MIN_PIX_PER_SPLIT = 1024  # pixels per wgrad program before the batch/space range is split further
_MAX_SPLITS = 512  # bound on wgrad partial rows (~4 programs per SM on an H100 per channel block)


def logical_strides(t, layout: str):
    """(b, c, h, w) strides of `t`: [B, C, H, W] for "NCHW", [B, H, W, C] for "NHWC"."""
    s = t.stride()
    return (s[0], s[3], s[1], s[2]) if layout == "NHWC" else tuple(s)


def logical_shape(t, layout: str):
    """(B, C, H, W) of `t` in `layout`."""
    B, d1, d2, d3 = t.shape
    return (B, d3, d1, d2) if layout == "NHWC" else (B, d1, d2, d3)


def wgrad_splits(n_pix: int, pix_per_split=None):
    """(pix_per_split, n_splits) for the grad-weight reduction: a function of the shape only."""
    if pix_per_split is None:
        pix_per_split = max(_MIN_PIX_PER_SPLIT, triton.cdiv(n_pix, _MAX_SPLITS))
    return pix_per_split, triton.cdiv(n_pix, pix_per_split)


def dwconv2d_conv_triton(x, x_layout, weight, bias, y, y_layout, residual: bool, flip: bool = False):
    """Write `dwconv(x)` (+bias, +x; flipped kernel if `flip`) into the preallocated `y`."""
    B, C, H, W = logical_shape(x, x_layout)
    n_pix = B * H * W
    K = weight.shape[-1]
    grid = lambda meta: (triton.cdiv(n_pix, meta["BLOCK_P"]), triton.cdiv(C, meta["BLOCK_C"]))  # noqa: E731
    launch.run(_dwconv2d_fwd_kernel, grid,
        x, weight, bias if bias is not None else weight, y,
        C, H, W, n_pix,
        *logical_strides(x, x_layout),
        *logical_strides(y, y_layout),
        weight.stride(0), weight.stride(2), weight.stride(3),
        K=K, SIGN=-1 if flip else 1, HAS_BIAS=bias is not None, RESIDUAL=residual,
    )
    return y


def dwconv2d_wgrad_triton(x, x_layout, grad, grad_layout, K: int, partial, out, pix_per_split: int):
    """Deterministic grad weight/bias: `out` ([K*K + 1, C], fp32) = sum over pixels, two passes.

    `partial` is a scratch fp32 buffer of at least `n_splits * (K*K + 1) * C` elements.
    """
    B, C, H, W = logical_shape(x, x_layout)
    n_pix = B * H * W
    n_splits = triton.cdiv(n_pix, pix_per_split)
    grid = lambda meta: (n_splits, triton.cdiv(C, meta["BLOCK_C"]))  # noqa: E731
    launch.run(_dwconv2d_bwd_wgrad_kernel, grid,
        x, grad, partial,
        C, H, W, n_pix, pix_per_split,
        *logical_strides(x, x_layout),
        *logical_strides(grad, grad_layout),
        K=K, TAPS=triton.next_power_of_2(K * K),
    )
    sum_rows_triton(partial, out, n_splits, (K * K + 1) * C)
    return out


def sum_rows_triton(partial, out, n_rows: int, n_cols: int):
    """out[:n_cols] = partial.view(n_rows, n_cols).sum(0), in a fixed order."""
    launch.run(_sum_rows_kernel, (triton.cdiv(n_cols, _SUM_BLOCK),), partial, out, n_rows, n_cols, BLOCK=_SUM_BLOCK)
    return out


def dwconv2d_fwd_triton(x, weight, bias, residual: bool, layout: str):
    """`dwconv(x) + bias (+ x)` in `x`'s layout and memory format (dense strides are kept)."""
    y = torch.empty_like(x)
    return dwconv2d_conv_triton(x, layout, weight, bias, y, layout, residual)


def dwconv2d_bwd_triton(grad_out, x, weight, bias, residual: bool, layout: str, needs_grad):
    """`fastwin::dwconv2d_bwd` (schema order): the bias gradient is one extra row of the weight
    reduction, computed whenever the weight's is."""
    return dwconv2d_grads_triton(grad_out, x, weight, residual, layout)


def dwconv2d_grads_triton(grad, x, weight, residual: bool, layout: str, pix_per_split=None):
    """(grad_x, grad_weight, grad_bias) of `dwconv2d_fwd_triton`; `grad` may have any strides.

    grad_bias is always computed (it is one extra row of the weight reduction).
    """
    grad_x = torch.empty_like(x)
    dwconv2d_conv_triton(grad, layout, weight, None, grad_x, layout, residual, flip=True)
    grad_w, grad_b = wgrad_alloc_and_run(x, layout, grad, layout, weight, pix_per_split)
    return grad_x, grad_w, grad_b


def wgrad_alloc_and_run(x, x_layout, grad, grad_layout, weight, pix_per_split=None):
    """Allocate the scratch buffers, run the two-pass reduction, return (grad_weight, grad_bias)."""
    B, C, H, W = logical_shape(x, x_layout)
    K = weight.shape[-1]
    pix_per_split, n_splits = wgrad_splits(B * H * W, pix_per_split)
    partial = torch.empty((n_splits, K * K + 1, C), device=x.device, dtype=torch.float32)
    out = torch.empty((K * K + 1, C), device=x.device, dtype=torch.float32)
    dwconv2d_wgrad_triton(x, x_layout, grad, grad_layout, K, partial, out, pix_per_split)
    # copy=True: op outputs must not alias each other or the scratch buffer (torch.library rule)
    grad_w = out[: K * K].t().reshape(C, 1, K, K).to(weight.dtype, copy=True)
    return grad_w, out[K * K].to(weight.dtype, copy=True)
