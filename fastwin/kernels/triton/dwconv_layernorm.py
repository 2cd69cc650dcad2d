"""Triton fused UniFormer SABlock entry: position embedding + residual + flatten + LayerNorm, fwd + bwd.

Forward (one kernel): for every token p = (b*H + h)*W + w
    tokens[p, :] = x[b, :, h, w] + dwconv(x)[b, :, h, w] + bias           (the residual stream)
    normed[p, :] = (tokens[p] - mean[p]) * rstd[p] * ln_weight + ln_bias  (LayerNorm over C)
with `tokens`/`normed` written as [B, H*W, C] (contiguous) and fp32 `mean`/`rstd` [B*H*W] kept for
the backward. The LayerNorm reads `tokens` as stored (rounded to the storage dtype), exactly like the
reference, which normalizes the tensor it returns.

Input layouts are those of `dwconv.py` (NCHW contiguous, NCHW channels-last memory, NHWC; explicit
strides). A program owns BLOCK_P tokens by all channels (BLOCK_C = next power of two >= C, masked),
so the LayerNorm statistics never leave registers; C is limited to MAX_CHANNELS.

Backward:
    1. `_dwconv_layernorm_bwd_ln_kernel`: per token, the LayerNorm backward plus the tokens gradient,
       g = d tokens + rstd * (gn - mean(gn) - xhat * mean(gn * xhat)),  gn = d normed * ln_weight,
       written as an fp32 [B*H*W, C] buffer; fp32 partial sums of d normed * xhat and d normed per
       fixed pixel range (ln_weight / ln_bias grads), reduced in a fixed order by
       `dwconv._sum_rows_kernel` (deterministic, no atomics).
    2. The depthwise-conv backward of `dwconv.py` applied to g (as an NHWC map): grad x = g +
       flipped-kernel conv of g, and the deterministic two-pass grad weight / grad bias.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import dwconv, interpreting, launch
from .autotune import autotune

MAX_CHANNELS = 2048  # full-C tile per program; beyond this the tile no longer fits in registers


# ----------------------------------------------------------------------------------------------
# Autotune configs and prune filter
# ----------------------------------------------------------------------------------------------
_ROW_CONFIGS = [
    triton.Config({"BLOCK_P": bp}, num_warps=w)
    for bp in (1, 2, 4, 8, 16, 32, 64) for w in (1, 2, 4, 8)
]


def _prune_rows(configs, nargs, **kwargs):
    """Keep 4..16 fp32 tile elements per lane (no spills on sm_90) and no tile taller than the problem.

    The fp32 backward holds more [BLOCK_P, BLOCK_C] tiles at once: at 16 elements per lane its sm_90
    build spilled (benchmarks/kernel_resources.py), so it keeps at most 8.
    """
    bc = kwargs["BLOCK_C"] if "BLOCK_C" in kwargs else nargs["BLOCK_C"]
    backward = "pix_per_split" in nargs
    n_pix = nargs["pix_per_split"] if backward else nargs["n_pix"]
    hi = 8 if backward and nargs["tok_ptr"].element_size() == 4 else 16
    pmax = triton.next_power_of_2(max(1, n_pix))
    kept = [
        c for c in configs
        if c.kwargs["BLOCK_P"] <= pmax and 4 <= c.kwargs["BLOCK_P"] * bc // (32 * c.num_warps) <= hi  # 32 lanes/warp
    ]
    kept = kept or [min(configs, key=lambda c: (c.kwargs["BLOCK_P"], c.num_warps))]
    if interpreting():  # fewest programs: the interpreter pays per program instance
        return [max(kept, key=lambda c: (min(c.kwargs["BLOCK_P"], pmax), -c.kwargs["BLOCK_P"]))]
    return kept


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------
@autotune(_ROW_CONFIGS, ["C", "n_pix", "H", "W", "K", "x_sc"], _prune_rows)
@triton.jit
def _dwconv_layernorm_fwd_kernel(
    x_ptr, w_ptr, b_ptr, lnw_ptr, lnb_ptr,
    tok_ptr, out_ptr, mean_ptr, rstd_ptr,
    C, H, W, n_pix, eps,
    x_sb, x_sc, x_sh, x_sw,
    w_sc, w_sh, w_sw,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_LNW: tl.constexpr, HAS_LNB: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    PAD: tl.constexpr = K // 2
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.arange(0, BLOCK_C)
    p_ok = p < n_pix
    c_ok = c < C
    mask = p_ok[:, None] & c_ok[None, :]
    hw = H * W
    b = p // hw
    h = (p - b * hw) // W
    w = p - b * hw - h * W
    # Tap addresses are this offset tile plus a scalar (see dwconv._dwconv2d_fwd_kernel).
    x_off = (b.to(tl.int64) * x_sb + h * x_sh + w * x_sw)[:, None] + (c * x_sc)[None, :]

    # Position embedding: residual + depthwise conv + bias, fp32 accumulation.
    acc = tl.load(x_ptr + x_off, mask=mask, other=0.0).to(tl.float32)
    for i in range(K):  # rolled, as in dwconv._dwconv2d_fwd_kernel
        hi = h + (i - PAD)
        row_ok = p_ok & (hi >= 0) & (hi < H)
        for j in tl.static_range(K):
            wj = w + (j - PAD)
            ok = row_ok & (wj >= 0) & (wj < W)
            v = tl.load(x_ptr + x_off + ((i - PAD) * x_sh + (j - PAD) * x_sw), mask=ok[:, None] & c_ok[None, :],
                        other=0.0)
            wt = tl.load(w_ptr + c * w_sc + i * w_sh + j * w_sw, mask=c_ok, other=0.0)
            acc += v.to(tl.float32) * wt.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    tok_off = p.to(tl.int64)[:, None] * C + c[None, :]
    tok = acc.to(tok_ptr.dtype.element_ty)
    tl.store(tok_ptr + tok_off, tok, mask=mask)

    # LayerNorm over C of the stored tokens (masked lanes hold 0 and are excluded from the variance).
    y = tok.to(tl.float32)
    mean = tl.sum(y, axis=1) / C
    diff = tl.where(mask, y - mean[:, None], 0.0)
    var = tl.sum(diff * diff, axis=1) / C
    rstd = 1.0 / tl.sqrt(var + eps)
    out = diff * rstd[:, None]
    if HAS_LNW:
        out = out * tl.load(lnw_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_LNB:
        out = out + tl.load(lnb_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + tok_off, out.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + p, mean, mask=p_ok)
    tl.store(rstd_ptr + p, rstd, mask=p_ok)


@autotune(_ROW_CONFIGS, ["C", "n_pix", "pix_per_split", "HW"], _prune_rows)
@triton.jit
def _dwconv_layernorm_bwd_ln_kernel(
    tok_ptr, mean_ptr, rstd_ptr, lnw_ptr, dtok_ptr, dn_ptr, g_ptr, part_ptr,
    C, HW, n_pix, pix_per_split,
    dt_sb, dt_sn, dt_sc,
    dn_sb, dn_sn, dn_sc,
    HAS_LNW: tl.constexpr, HAS_DTOK: tl.constexpr, HAS_DNORM: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """LayerNorm backward for the tokens of split `program_id(0)`; see the module docstring."""
    pid = tl.program_id(0)
    c = tl.arange(0, BLOCK_C)
    c_ok = c < C
    if HAS_LNW:
        gamma = tl.load(lnw_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    else:
        gamma = tl.where(c_ok, 1.0, 0.0)
    start = pid * pix_per_split
    end = tl.minimum(start + pix_per_split, n_pix)
    acc_w = tl.zeros([BLOCK_C], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_C], dtype=tl.float32)
    for p0 in range(start, end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        p_ok = p < end
        mask = p_ok[:, None] & c_ok[None, :]
        p64 = p.to(tl.int64)
        b = p64 // HW
        n = p64 - b * HW
        tok_off = p64[:, None] * C + c[None, :]
        g = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
        if HAS_DNORM:
            mean = tl.load(mean_ptr + p, mask=p_ok, other=0.0)
            rstd = tl.load(rstd_ptr + p, mask=p_ok, other=0.0)
            tok = tl.load(tok_ptr + tok_off, mask=mask, other=0.0).to(tl.float32)
            xhat = tl.where(mask, (tok - mean[:, None]) * rstd[:, None], 0.0)
            dn_off = (b * dn_sb + n * dn_sn)[:, None] + (c * dn_sc)[None, :]
            dn = tl.load(dn_ptr + dn_off, mask=mask, other=0.0).to(tl.float32)
            gn = dn * gamma[None, :]
            c1 = tl.sum(gn * xhat, axis=1) / C
            c2 = tl.sum(gn, axis=1) / C
            g = (gn - xhat * c1[:, None] - c2[:, None]) * rstd[:, None]
            acc_w += tl.sum(dn * xhat, axis=0)
            acc_b += tl.sum(dn, axis=0)
        if HAS_DTOK:
            dt_off = (b * dt_sb + n * dt_sn)[:, None] + (c * dt_sc)[None, :]
            g += tl.load(dtok_ptr + dt_off, mask=mask, other=0.0).to(tl.float32)
        tl.store(g_ptr + tok_off, g, mask=mask)
    row = part_ptr + pid * (2 * C)
    tl.store(row + c, acc_w, mask=c_ok)
    tl.store(row + C + c, acc_b, mask=c_ok)


# ----------------------------------------------------------------------------------------------
# Launchers (`launch.run` as in dwconv.py)
# ----------------------------------------------------------------------------------------------
def dwconv_layernorm_fwd_into(x, layout, weight, bias, ln_weight, ln_bias, eps, tokens, normed, mean, rstd):
    """Run the fused forward into preallocated tokens/normed [B, H*W, C] and mean/rstd [B*H*W] fp32."""
    B, C, H, W = dwconv.logical_shape(x, layout)
    n_pix = B * H * W
    K = weight.shape[-1]
    grid = lambda meta: (triton.cdiv(n_pix, meta["BLOCK_P"]),)  # noqa: E731
    launch.run(_dwconv_layernorm_fwd_kernel, grid,
        x, weight, bias if bias is not None else weight,
        ln_weight if ln_weight is not None else weight, ln_bias if ln_bias is not None else weight,
        tokens, normed, mean, rstd,
        C, H, W, n_pix, eps,
        *dwconv.logical_strides(x, layout),
        weight.stride(0), weight.stride(2), weight.stride(3),
        K=K, HAS_BIAS=bias is not None, HAS_LNW=ln_weight is not None, HAS_LNB=ln_bias is not None,
        BLOCK_C=max(16, triton.next_power_of_2(C)),  # 16: smallest tile the layouts handle well
    )
    return tokens, normed, mean, rstd


def dwconv_layernorm_fwd_triton(x, weight, bias, ln_weight, ln_bias, eps: float, layout: str):
    """(tokens, normed, mean, rstd): tokens/normed [B, H*W, C] in x's dtype, mean/rstd [B*H*W] fp32."""
    B, C, H, W = dwconv.logical_shape(x, layout)
    tokens = torch.empty((B, H * W, C), device=x.device, dtype=x.dtype)
    normed = torch.empty_like(tokens)
    mean = torch.empty((B * H * W,), device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    return dwconv_layernorm_fwd_into(x, layout, weight, bias, ln_weight, ln_bias, eps, tokens, normed, mean, rstd)


def dwconv_layernorm_grads_triton(grad_tokens, grad_normed, x, weight, ln_weight, tokens, mean, rstd, layout: str,
                                  pix_per_split=None):
    """Grads (x, weight, bias, ln_weight, ln_bias); either output grad may be None.

    ln grads are fp32-reduced then cast to ln_weight's dtype (x's dtype when ln_weight is None).
    """
    B, C, H, W = dwconv.logical_shape(x, layout)
    n_pix = B * H * W
    pix_per_split, n_splits = dwconv.wgrad_splits(n_pix, pix_per_split)
    g = torch.empty((B, H, W, C), device=x.device, dtype=torch.float32)  # grad of the conv output, NHWC
    part = torch.empty((n_splits, 2, C), device=x.device, dtype=torch.float32)
    ln_sums = torch.empty((2, C), device=x.device, dtype=torch.float32)
    dummy = mean
    launch.run(_dwconv_layernorm_bwd_ln_kernel, (n_splits,),
        tokens, mean, rstd, ln_weight if ln_weight is not None else dummy,
        grad_tokens if grad_tokens is not None else dummy, grad_normed if grad_normed is not None else dummy,
        g, part,
        C, H * W, n_pix, pix_per_split,
        *(grad_tokens.stride() if grad_tokens is not None else (0, 0, 0)),
        *(grad_normed.stride() if grad_normed is not None else (0, 0, 0)),
        HAS_LNW=ln_weight is not None, HAS_DTOK=grad_tokens is not None, HAS_DNORM=grad_normed is not None,
        BLOCK_C=max(16, triton.next_power_of_2(C)),
    )
    dwconv.sum_rows_triton(part, ln_sums, n_splits, 2 * C)
    grad_x = torch.empty_like(x)
    dwconv.dwconv2d_conv_triton(g, "NHWC", weight, None, grad_x, layout, residual=True, flip=True)
    grad_w, grad_b = dwconv.wgrad_alloc_and_run(x, layout, g, "NHWC", weight, pix_per_split)
    ln_dtype = ln_weight.dtype if ln_weight is not None else x.dtype
    return grad_x, grad_w, grad_b, ln_sums[0].to(ln_dtype, copy=True), ln_sums[1].to(ln_dtype, copy=True)


def dwconv_layernorm_bwd_triton(grad_tokens, grad_normed, tokens, mean, rstd, x, weight, bias, ln_weight, ln_bias,
                                eps: float, layout: str, needs_grad):
    """`fastwin::dwconv_layernorm_bwd` (schema order): every gradient (each is one more reduction row)."""
    return dwconv_layernorm_grads_triton(grad_tokens, grad_normed, x, weight, ln_weight, tokens, mean, rstd, layout)
