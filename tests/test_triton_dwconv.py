"""Triton depthwise conv and fused DPE + LayerNorm: kernel-level tests (split reductions, determinism,
every output element written, refusals before launch). Parity with the reference over layouts, kernel
sizes and dtypes is in tests/test_conformance.py.

Without CUDA the kernels run under TRITON_INTERPRET=1 (set by conftest): every program instance costs
milliseconds, so maps stay <= 13x13 and channels <= 16. bf16 runs only on a GPU.
"""
import pytest
import torch

triton = pytest.importorskip("triton")

import fastwin  # noqa: E402
from fastwin import dispatch, ops  # noqa: E402
from fastwin.reference.conv import dwconv2d_ref  # noqa: E402

if not fastwin.backends()["triton"]:
    pytest.skip(f"triton backend unavailable: {fastwin.backends().reasons.get('triton')}", allow_module_level=True)

from fastwin.kernels.triton import dwconv, dwconv_layernorm  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
C = 10  # not a power of two: the channel mask is exercised


def make_x(B, Cn, H, W, layout, dtype):
    x = torch.randn(B, Cn, H, W, device=DEVICE, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "NHWC":
        x = x.permute(0, 2, 3, 1).contiguous()
    return x


def leaves(*ts, dtype=None):
    return [None if t is None else t.detach().to(dtype or t.dtype).requires_grad_(True) for t in ts]


def grads(outs, inputs, cotangents):
    used = [t for t in inputs if t is not None]
    got = torch.autograd.grad(outs, used, cotangents)
    it = iter(got)
    return [None if t is None else next(it) for t in inputs]


# ----------------------------------------------------------------------------------------------
# dwconv2d
# ----------------------------------------------------------------------------------------------
def test_dwconv2d_wgrad_splits_and_determinism():
    """Many pixel splits (ranges crossing tile and batch boundaries) give the same grads, bitwise per run."""
    B, H, W, k = 2, 7, 9, 3
    x = make_x(B, C, H, W, "channels_last", torch.float32)
    w = torch.randn(C, 1, k, k, device=DEVICE)
    g = torch.randn_like(x)
    runs = [dwconv.dwconv2d_grads_triton(g, x, w, True, "NCHW", pix_per_split=pps) for pps in (None, 37, 37)]
    for a, b in zip(runs[1], runs[2]):
        assert torch.equal(a, b)  # deterministic: no atomics, fixed-order reduction
    for a, b in zip(runs[0], runs[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    xr, wr = leaves(x, w, dtype=torch.float64)
    yr = dwconv2d_ref(xr, wr, None, True)
    ref = grads(yr, [xr, wr], g.double())
    torch.testing.assert_close(runs[1][0].double(), ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(runs[1][1].double(), ref[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(runs[1][2].double(), g.double().sum((0, 2, 3)), rtol=1e-5, atol=1e-5)


def test_kernels_write_every_output_element():
    """NaN-poisoned outputs are fully overwritten by the conv, flipped conv and reduction kernels."""
    B, H, W, k = 1, 7, 5, 5
    x = make_x(B, C, H, W, "NCHW", torch.float32)
    w = torch.randn(C, 1, k, k, device=DEVICE)
    b = torch.randn(C, device=DEVICE)
    for flip in (False, True):
        y = torch.full_like(x, float("nan"))
        dwconv.dwconv2d_conv_triton(x, "NCHW", w, b, y, "NCHW", residual=True, flip=flip)
        assert torch.isfinite(y).all()
    pps, n_splits = dwconv.wgrad_splits(B * H * W, 16)
    part = torch.full((n_splits, k * k + 1, C), float("nan"), device=DEVICE)
    out = torch.full((k * k + 1, C), float("nan"), device=DEVICE)
    dwconv.dwconv2d_wgrad_triton(x, "NCHW", torch.randn_like(x), "NCHW", k, part, out, pps)
    assert torch.isfinite(part).all() and torch.isfinite(out).all()
    outs = [torch.full((B, H * W, C), float("nan"), device=DEVICE) for _ in range(2)]
    outs += [torch.full((B * H * W,), float("nan"), device=DEVICE) for _ in range(2)]
    dwconv_layernorm.dwconv_layernorm_fwd_into(x, "NCHW", w, b, None, None, 1e-6, *outs)
    assert all(torch.isfinite(o).all() for o in outs)


# ----------------------------------------------------------------------------------------------
# dwconv + LayerNorm
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use", ["normed_only", "tokens_only"])
def test_dwconv_layernorm_no_affine_one_output(use):
    """No conv bias / LayerNorm affine; the loss uses one output (the other gradient is None or zero)."""
    x0 = make_x(1, C, 5, 7, "channels_last", torch.float32)
    w0 = torch.randn(C, 1, 3, 3, device=DEVICE)
    outs_grads = []
    for backend, dt in (("triton", torch.float32), ("reference", torch.float64)):
        with fastwin.set_backend(backend, strict=True):
            x, w = leaves(x0, w0, dtype=dt)
            tokens, normed = ops.dwconv_layernorm(x, w, None, None, None, 1e-5)
        out = normed if use == "normed_only" else tokens
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=dt).view_as(out)).sum()
        outs_grads.append([tokens, normed] + list(torch.autograd.grad(loss, [x, w])))
    for f, r in zip(*outs_grads):
        torch.testing.assert_close(f.double(), r, rtol=1e-4, atol=1e-5)


def test_dwconv_layernorm_bwd_splits():
    """The LayerNorm-parameter reduction over many splits matches the single-split result."""
    x = make_x(2, C, 5, 6, "NHWC", torch.float32)
    w = torch.randn(C, 1, 3, 3, device=DEVICE)
    lw = torch.randn(C, device=DEVICE)
    tokens, normed, mean, rstd = dwconv_layernorm.dwconv_layernorm_fwd_triton(x, w, None, lw, None, 1e-6, "NHWC")
    gt, gn = torch.randn_like(tokens), torch.randn_like(normed)
    a = dwconv_layernorm.dwconv_layernorm_grads_triton(gt, gn, x, w, lw, tokens, mean, rstd, "NHWC")
    b = dwconv_layernorm.dwconv_layernorm_grads_triton(gt, gn, x, w, lw, tokens, mean, rstd, "NHWC", pix_per_split=7)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Bad input never reaches a kernel; unsupported calls are refused with a reason
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def no_launch(monkeypatch):
    """Replace every kernel by an object that fails the test if a launcher touches it."""

    class Forbidden:
        def __getitem__(self, grid):
            raise AssertionError("a kernel was launched for an invalid input")

    for mod in (dwconv, dwconv_layernorm):
        for name in dir(mod):
            if name.startswith("_") and name.endswith("_kernel"):
                monkeypatch.setattr(mod, name, Forbidden())


@pytest.mark.parametrize("op", ["dwconv2d", "dwconv_layernorm"])
@pytest.mark.parametrize("case,exc,match", [
    ("channels", ValueError, r"weight must have shape \[C, 1, k, k\] = \[4, 1, k, k\]"),
    ("even_kernel", ValueError, "kernel size must be odd"),
    ("layout", ValueError, "layout must be 'NCHW' or 'NHWC'"),
    ("nhwc_channels", ValueError, r"\[6, 1, k, k\] for x of shape \(1, 5, 5, 6\) \(NHWC\)"),
])
def test_rejected_before_launch(no_launch, op, case, exc, match):
    x = torch.randn(1, 4, 5, 5, device=DEVICE)
    w = torch.randn(4, 1, 3, 3, device=DEVICE)
    layout = "NCHW"
    if case == "channels":
        w = torch.randn(6, 1, 3, 3, device=DEVICE)
    elif case == "even_kernel":
        w = torch.randn(4, 1, 4, 4, device=DEVICE)
    elif case == "layout":
        layout = "NCWH"
    elif case == "nhwc_channels":
        x, layout = torch.randn(1, 5, 5, 6, device=DEVICE), "NHWC"  # channels last, weight has 4
    with fastwin.set_backend("triton", strict=True), pytest.raises(exc, match=match):
        if op == "dwconv2d":
            ops.dwconv2d(x, w, None, layout=layout)
        else:
            ops.dwconv_layernorm(x, w, None, None, None, layout=layout)


@pytest.mark.parametrize("case,match", [
    ("kernel9", "kernel_size must be odd and at most 7, got 9"),
    ("float64", "dtype torch.float64 is not supported"),
])
def test_unsupported_calls_refused(no_launch, case, match):
    dtype = torch.float64 if case == "float64" else torch.float32
    k = 9 if case == "kernel9" else 3
    x = torch.randn(1, 4, 5, 5, device=DEVICE, dtype=dtype)
    w = torch.randn(4, 1, k, k, device=DEVICE, dtype=dtype)
    with fastwin.set_backend("triton", strict=True), pytest.raises(RuntimeError, match=match):
        ops.dwconv2d(x, w)
    with fastwin.set_backend("triton"), pytest.warns(RuntimeWarning, match=match), dispatch.record() as ran:
        y = ops.dwconv2d(x, w)  # non-strict: the reference takes over
    assert ran == [("dwconv2d", "reference")]
    torch.testing.assert_close(y, dwconv2d_ref(x, w))


def test_supports_table():
    from fastwin.backend import triton_backend

    def call(op="dwconv2d", **fields):
        return dispatch.ConvCall(op, DEVICE, torch.float32, False, **fields)

    assert triton_backend.supports(call(kernel_size=7, layout="NHWC")) is None
    assert "kernel_size" in triton_backend.supports(call(kernel_size=4))
    assert "float64" in triton_backend.supports(call()._replace(dtype=torch.float64))
