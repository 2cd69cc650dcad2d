"""Regression tests for defects of the Triton window-attention kernels (issues 10 and 12).

Each test drives the launchers of `fastwin.kernels.triton.window_attention_launchers` (what the
Triton ops are) through a small autograd Function and compares output and gradients with the
reference under the SPEC §6 rule. Without CUDA they run under TRITON_INTERPRET=1 (conftest), so
shapes stay tiny. Outputs are poisoned with NaN before the kernels write them.
"""
import subprocess
import sys
import textwrap

import pytest
import torch

triton = pytest.importorskip("triton")

import fastwin  # noqa: E402
from fastwin.kernels.triton import window_attention as K  # noqa: E402
from fastwin.kernels.triton import window_attention_launchers as L  # noqa: E402
from fastwin.reference.attention import attention_ref  # noqa: E402
from fastwin.reference.window import shifted_window_attention_ref, window_attention_ref  # noqa: E402
from tests.helpers import poison  # noqa: E402,F401 (the fixture)
from tests.tolerance import assert_within_rule  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


pytestmark = pytest.mark.usefixtures("poison")  # launchers' allocations start as NaN


class _Triton(torch.autograd.Function):
    """One of the three ops on its Triton launchers, which take the op schema's arguments: the
    `n_tensors` tensor inputs, then the attributes."""

    @staticmethod
    def forward(ctx, op, n_tensors, *args):
        out, lse = getattr(L, f"{op}_fwd_triton")(*args)
        ctx.save_for_backward(*args[:n_tensors], out, lse)
        ctx.op, ctx.n, ctx.attrs = op, n_tensors, args[n_tensors:]
        return out

    @staticmethod
    def backward(ctx, dout):
        *inputs, out, lse = ctx.saved_tensors
        need = list(ctx.needs_input_grad[2:2 + ctx.n])
        grads = getattr(L, f"{ctx.op}_bwd_triton")(dout.contiguous(), out, lse, *inputs, *ctx.attrs, need)
        grads = list(grads) if isinstance(grads, tuple) else [grads]
        for k, (g, t, n) in enumerate(zip(grads, inputs, need)):
            if n:
                if not g.numel() and t.numel():  # the input does not affect the output (qkv_bias, no padding)
                    grads[k] = g = torch.zeros_like(t)
                assert g.shape == t.shape and g.dtype == t.dtype, f"input {k}: {g.shape} {g.dtype} vs {t.shape} {t.dtype}"
        return (None, None, *[g if n else None for g, n in zip(grads, need)], *[None] * len(ctx.attrs))


def _scale(qkv, heads, scale):
    return (qkv.shape[-1] // (3 * heads)) ** -0.5 if scale is None else scale


def shifted_triton(qkv, heads, window, shift, table, qkv_bias, scale=None, order="roll_pad"):
    return _Triton.apply("shifted_window_attention", 3, qkv, table, qkv_bias, heads, window, shift,
                         _scale(qkv, heads, scale), order == "pad_roll")


def windows_triton(qkv, heads, window, table, mask, scale=None):
    return _Triton.apply("window_attention", 3, qkv, table, mask, heads, window, _scale(qkv, heads, scale))


def global_triton(qkv, heads, scale=None):
    return _Triton.apply("attention", 1, qkv, heads, _scale(qkv, heads, scale))


def _leaf(t):
    return None if t is None else t.detach().clone().requires_grad_(True)


def check(fast_fn, ref_fn, inputs, names, dtype, grad_scale=1.0):
    """fast vs reference (fp64 and same-precision), output and the grads of every given input."""
    fast_in = [_leaf(t) for t in inputs]
    out = fast_fn(*fast_in)
    grad = torch.randn_like(out) * grad_scale
    exact_in = [_leaf(t.double()) if t is not None else None for t in inputs]
    lowp_in = [_leaf(t) for t in inputs]
    exact, lowp = ref_fn(*exact_in), ref_fn(*lowp_in)
    assert_within_rule(out, lowp, exact, "output", dtype)
    idx = [i for i, t in enumerate(inputs) if t is not None]
    g_fast = torch.autograd.grad(out, [fast_in[i] for i in idx], grad)
    g_exact = torch.autograd.grad(exact, [exact_in[i] for i in idx], grad.double(), allow_unused=True)
    g_lowp = torch.autograd.grad(lowp, [lowp_in[i] for i in idx], grad, allow_unused=True)
    for i, gf, ge, gl in zip(idx, g_fast, g_exact, g_lowp):
        ge = torch.zeros_like(gf, dtype=torch.float64) if ge is None else ge
        gl = torch.zeros_like(gf) if gl is None else gl
        assert_within_rule(gf, gl, ge, f"grad {names[i]}", dtype)
    return out, g_fast


def _table(window, heads, dtype):
    return torch.randn((2 * window[0] - 1) * (2 * window[1] - 1), heads, device=DEVICE, dtype=dtype)


# ------------------------------------------------------------------------------------------ issue 10 defects

def test_qkv_bias_strides_are_honoured():
    """Defect 1: a non-contiguous qkv_bias (every other element of a wider tensor) on a padded map."""
    heads, d, window = 1, 16, (4, 4)
    qkv = torch.randn(1, 6, 5, 3 * heads * d, device=DEVICE)
    wide = torch.randn(2 * 3 * heads * d, device=DEVICE)  # the leaf; the kernels see wide[::2]
    table = _table(window, heads, qkv.dtype)

    def fast(x, t, w):
        assert not w[::2].is_contiguous()
        return shifted_triton(x, heads, window, (2, 2), t, w[::2])

    def ref(x, t, w):
        return shifted_window_attention_ref(x, t, w[::2], heads, window, (2, 2))

    check(fast, ref, [qkv, table, wide], ["qkv", "table", "qkv_bias (wide)"], torch.float32)


_OFF64_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, os.getcwd())
    from tests.test_triton_attention_defects import shifted_triton
    from fastwin.reference.window import shifted_window_attention_ref
    heads, d, H, W = 1, 16, 3, 3
    C3 = 3 * heads * d
    row = 2**30 + 64  # an int32 row stride whose products pass 2**31 from map row 2 on
    # ~2**31 fp16 elements of *virtual* memory: only the pages the view touches are committed
    store = torch.empty(2 * row + W * C3, dtype=torch.float16)
    qkv = store.as_strided((1, H, W, C3), (2 * row + W * C3, row, C3, 1))
    qkv.copy_(torch.randn(1, H, W, C3, dtype=torch.float16))
    out = shifted_triton(qkv, heads, (2, 2), (1, 1), None, None)
    ref = shifted_window_attention_ref(qkv.contiguous().double(), None, None, heads, (2, 2), (1, 1))
    err = (out.double() - ref).abs().max().item()
    print("max error", err)
    sys.exit(0 if err < 2e-2 else 3)
""")


@pytest.mark.slow
@pytest.mark.skipif(DEVICE == "cuda", reason="interpreter test (virtual memory trick); GPU runs need 4 GB")
def test_per_image_offsets_beyond_int32():
    """Defect 2: a qkv whose per-image offsets pass 2**31 elements must be read with 64-bit offsets.

    Runs in a subprocess: the int32 arithmetic it guards against reads out of bounds and kills the
    process instead of failing an assertion.
    """
    res = subprocess.run([sys.executable, "-c", _OFF64_SCRIPT], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "TRITON_INTERPRET": "1"})
    assert res.returncode == 0, f"rc {res.returncode}\n{res.stdout}\n{res.stderr[-2000:]}"


def test_off64_switch():
    """The Python layer turns 64-bit offsets on exactly when a tensor spans 2**31 elements per image."""
    small = torch.empty(2, 3, 4, 48)
    big = torch.empty_strided((2, 3, 4, 48), (0, 2**30, 48, 1), device="meta")
    assert not L._off64(small)
    assert L._off64(big)


def test_mask_gradient():
    """Defect 3: window_attention's mask gets its gradient (sum over batch and heads of d logits)."""
    heads, d, window, nW = 2, 16, (4, 4), 2
    N = window[0] * window[1]
    qkv = torch.randn(2 * nW, N, 3 * heads * d, device=DEVICE)
    table = _table(window, heads, qkv.dtype)
    mask = torch.where(torch.rand(nW, N, N, device=DEVICE) < 0.3, -100.0, 0.0) + torch.randn(nW, N, N, device=DEVICE)

    def fast(x, t, m):
        return windows_triton(x, heads, window, t, m)

    def ref(x, t, m):
        return window_attention_ref(x, t, m, heads, window)

    check(fast, ref, [qkv, table, mask], ["qkv", "table", "mask"], torch.float32)


def test_mask_gradient_through_fastwin_ops():
    """Defect 3 end to end: fastwin.ops.window_attention on the triton backend returns the mask grad."""
    heads, d, window, nW = 1, 16, (4, 4), 2
    N = 16
    qkv = torch.randn(nW, N, 3 * heads * d, device=DEVICE)
    mask = torch.randn(nW, N, N, device=DEVICE, requires_grad=True)
    with fastwin.set_backend("triton", strict=True):
        out = fastwin.ops.window_attention(qkv, heads, window, None, mask)
    (g,) = torch.autograd.grad(out, mask, torch.ones_like(out))
    m2 = mask.detach().double().requires_grad_(True)
    ref = window_attention_ref(qkv.double(), None, m2, heads, window)
    (g_ref,) = torch.autograd.grad(ref, m2, torch.ones_like(ref))
    torch.testing.assert_close(g.double(), g_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_inf_mask_over_first_key_block(dtype):
    """Defect 4: -inf over every query's first key block (window 10x10: two 64-key blocks)."""
    heads, d, window = 1, 16, (10, 10)
    N = 100
    qkv = torch.randn(1, N, 3 * heads * d, device=DEVICE, dtype=dtype)
    mask = torch.zeros(1, N, N, device=DEVICE, dtype=dtype)
    mask[:, :, :70] = float("-inf")

    def fast(x):
        return windows_triton(x, heads, window, None, mask)

    def ref(x):
        return window_attention_ref(x, None, mask.to(x.dtype), heads, window)

    check(fast, ref, [qkv], ["qkv"], dtype)


# ------------------------------------------------------------------------------------------ issue 12 defects

@pytest.mark.parametrize("window", [(4, 4), (10, 10)], ids=["one-key-block", "two-key-blocks"])
def test_all_inf_rows_give_zero(window):
    """A query whose logits are all -inf gets output 0 and zero gradients (as the reference), no NaN."""
    heads, d = 2, 16
    N = window[0] * window[1]
    qkv = torch.randn(2, N, 3 * heads * d, device=DEVICE)
    table = _table(window, heads, qkv.dtype)
    mask = torch.randn(1, N, N, device=DEVICE)
    dead = [0, 3, N - 1]
    mask[:, dead, :] = float("-inf")

    def fast(x, t, m):
        return windows_triton(x, heads, window, t, m)

    def ref(x, t, m):
        return window_attention_ref(x, t, m, heads, window)

    out, grads = check(fast, ref, [qkv, table, mask], ["qkv", "table", "mask"], torch.float32)
    assert out[:, dead].abs().max().item() == 0.0
    assert grads[0][:, dead, : heads * d].abs().max().item() == 0.0  # dq of dead queries
    assert grads[2][:, dead].abs().max().item() == 0.0  # their mask rows get no gradient


def _saturated(shape, dtype, magnitude=3.0):
    return (torch.randn(shape, device=DEVICE) * magnitude).clamp(-4 * magnitude, 4 * magnitude).to(dtype)


@pytest.mark.parametrize("window,shift", [((2, 1), (1, 0)), ((4, 4), (2, 2))])
def test_saturated_softmax_backward_fp16(window, shift):
    """fp16 backward with a saturated softmax: delta = sum_j P dP in fp32, not rowsum(dO * O_fp16)."""
    heads, d = 2, 16
    H, W = 2 * window[0] + 1, 2 * window[1] + 1
    qkv = _saturated((2, H, W, 3 * heads * d), torch.float16)
    table = _table(window, heads, torch.float16)
    qkv_bias = _saturated((3 * heads * d,), torch.float16)

    def fast(x, t, b):
        return shifted_triton(x, heads, window, shift, t, b, scale=0.3)

    def ref(x, t, b):
        return shifted_window_attention_ref(x, t, b, heads, window, shift, 0.3)

    check(fast, ref, [qkv, table, qkv_bias], ["qkv", "table", "qkv_bias"], torch.float16)


def test_saturated_softmax_backward_global_fp16():
    """Global attention over two key blocks (the dq kernel's first pass computes delta in fp32)."""
    heads, d, N = 1, 32, 100
    qkv = _saturated((1, N, 3 * heads * d), torch.float16)
    check(lambda x: global_triton(x, heads, 0.3), lambda x: attention_ref(x, heads, 0.3), [qkv], ["qkv"],
          torch.float16)


# ------------------------------------------------------------------------------------------ dense-bias design

@pytest.mark.parametrize("H,W,window,shift,order,dtype", [
    (9, 10, (4, 4), (2, 2), "pad_roll", torch.float32),
    (8, 9, (4, 4), (2, 2), "roll_pad", torch.float16),
    (6, 8, (2, 4), (1, 2), "roll_pad", torch.float32),
    (4, 8, (4, 4), (0, 2), "pad_roll", torch.float32),
    (3, 5, (4, 4), (3, 1), "roll_pad", torch.float32),
])
def test_dense_bias_shifted(H, W, window, shift, order, dtype):
    """Window kinds (last row/column, one-dim shifts, maps smaller than a window) fwd + bwd."""
    heads, d = 2, 16
    qkv = torch.randn(1, H, W, 3 * heads * d, device=DEVICE, dtype=dtype)
    table, qkv_bias = _table(window, heads, dtype), torch.randn(3 * heads * d, device=DEVICE, dtype=dtype)

    def fast(x, t, b):
        return shifted_triton(x, heads, window, shift, t, b, order=order)

    def ref(x, t, b):
        return shifted_window_attention_ref(x, t, b, heads, window, shift, pad_roll=order == "pad_roll")

    check(fast, ref, [qkv, table, qkv_bias], ["qkv", "table", "qkv_bias"], dtype)


def test_dense_bias_windows_with_table_and_mask():
    """Given windows, several heads, per-window mask + table, all three gradients, fp16."""
    heads, d, window, nW = 2, 16, (4, 4), 2
    N = 16
    qkv = torch.randn(2 * nW, N, 3 * heads * d, device=DEVICE, dtype=torch.float16)
    table = _table(window, heads, torch.float16)
    mask = (torch.where(torch.rand(nW, N, N, device=DEVICE) < 0.3, -100.0, 0.0)
            + torch.randn(nW, N, N, device=DEVICE)).half()

    def fast(x, t, m):
        return windows_triton(x, heads, window, t, m)

    def ref(x, t, m):
        return window_attention_ref(x, t, m, heads, window)

    check(fast, ref, [qkv, table, mask], ["qkv", "table", "mask"], torch.float16)


@pytest.mark.parametrize("d", [24, 48])
def test_head_dim_not_power_of_two(d):
    """Head dims padded to the next power of two with masked loads (shifted, padded map)."""
    heads, window = 2, (4, 4)
    qkv = torch.randn(1, 6, 5, 3 * heads * d, device=DEVICE)
    table, qkv_bias = _table(window, heads, qkv.dtype), torch.randn(3 * heads * d, device=DEVICE)

    def fast(x, t, b):
        return shifted_triton(x, heads, window, (2, 2), t, b)

    def ref(x, t, b):
        return shifted_window_attention_ref(x, t, b, heads, window, (2, 2))

    check(fast, ref, [qkv, table, qkv_bias], ["qkv", "table", "qkv_bias"], torch.float32)


def test_empty_batch():
    qkv = torch.randn(0, 8, 8, 3 * 16, device=DEVICE, requires_grad=True)
    out = shifted_triton(qkv, 1, (4, 4), (2, 2), None, None)
    assert out.shape == (0, 8, 8, 16)
    (g,) = torch.autograd.grad(out, qkv, torch.ones_like(out))
    assert g.shape == qkv.shape


def test_supports_functions():
    assert K.supports_window(torch.float16, 32, (7, 7), "cuda") is None
    assert K.supports_window(torch.float16, 48, (12, 12), "cuda") is None
    assert "tokens" in K.supports_window(torch.float16, 32, (40, 40), "cuda")
    assert "head_dim" in K.supports_window(torch.float16, 256, (7, 7), "cuda")
    assert "float64" in K.supports_attention(torch.float64, 64, 196, "cuda")
    # bf16 on the CPU interpreter: its raw-bits operands are summed by fastwin's interpreter dot
    assert K.supports_attention(torch.bfloat16, 64, 196, "cpu") is None
    assert K.supports_attention(torch.bfloat16, 64, 4096, "cuda") is None
