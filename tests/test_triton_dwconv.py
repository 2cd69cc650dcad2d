"""Triton depthwise conv and fused DPE + LayerNorm against the reference (SPEC §6).

Without CUDA the kernels run under TRITON_INTERPRET=1 (set by conftest): every program instance costs
milliseconds, so maps stay <= 13x13 and channels <= 16. bf16 runs only on a GPU.
"""
import pytest
import torch

triton = pytest.importorskip("triton")

import fastwin  # noqa: E402
from fastwin import ops  # noqa: E402
from fastwin.reference.conv import dwconv2d_ref, dwconv_layernorm_ref  # noqa: E402

from tolerance import assert_within_rule  # noqa: E402

if not fastwin.backends()["triton"]:
    pytest.skip(f"triton backend unavailable: {fastwin.backends().reasons.get('triton')}", allow_module_level=True)

from fastwin.kernels.triton import dwconv, dwconv_layernorm, dwconv_ops  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])
LAYOUTS = ["NCHW", "channels_last", "NHWC"]
C = 10  # not a power of two: the channel mask is exercised
# (kernel, residual) -> (B, H, W): every kernel meets an odd map, batch 1 and 2, and a map smaller
# than itself, without multiplying the interpreted cases.
CONV_SHAPES = {
    (3, False): (1, 3, 5), (3, True): (2, 13, 11),
    (5, False): (2, 13, 11), (5, True): (1, 7, 7),
    (7, False): (1, 13, 11), (7, True): (2, 5, 3),
}
LN_SHAPES = {3: (2, 13, 11), 5: (1, 7, 7), 7: (2, 9, 5)}


def make_x(B, Cn, H, W, layout, dtype):
    x = torch.randn(B, Cn, H, W, device=DEVICE, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "NHWC":
        x = x.permute(0, 2, 3, 1).contiguous()
    return x


def op_layout(layout):
    return "NHWC" if layout == "NHWC" else "NCHW"


def leaves(*ts, dtype=None):
    return [None if t is None else t.detach().to(dtype or t.dtype).requires_grad_(True) for t in ts]


def grads(outs, inputs, cotangents):
    used = [t for t in inputs if t is not None]
    got = torch.autograd.grad(outs, used, cotangents)
    it = iter(got)
    return [None if t is None else next(it) for t in inputs]


def check_all(fast, lowp, exact, names, dtype):
    for f, lo, ex, n in zip(fast, lowp, exact, names):
        if ex is not None:
            assert_within_rule(f, lo, ex, n, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# dwconv2d
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dwconv2d_fwd_bwd(dtype, layout, k, residual):
    B, H, W = CONV_SHAPES[k, residual]
    x0 = make_x(B, C, H, W, layout, dtype)
    w0 = torch.randn(C, 1, k, k, device=DEVICE, dtype=dtype) / k
    b0 = torch.randn(C, device=DEVICE, dtype=dtype)
    lay = op_layout(layout)
    with fastwin.set_backend("triton", strict=True):
        x, w, b = leaves(x0, w0, b0)
        y = ops.dwconv2d(x, w, b, residual=residual, layout=lay)
        assert ops.last_backend() == "triton"
    g = torch.randn_like(y)
    assert y.shape == x.shape and y.stride() == x.stride()  # layout and memory format kept
    fast = [y] + grads(y, [x, w, b], g)

    ref = []
    for dt in (dtype, torch.float64):
        xr, wr, br = leaves(x0, w0, b0, dtype=dt)
        yr = dwconv2d_ref(xr, wr, br, residual, lay)
        ref.append([yr] + grads(yr, [xr, wr, br], g.to(dt)))
    check_all(fast, ref[0], ref[1], ["y", "grad_x", "grad_weight", "grad_bias"], dtype)


def test_dwconv2d_no_bias_noncontiguous():
    """A strided view (every other column) goes through the explicit strides without a copy."""
    base = torch.randn(2, C, 9, 18, device=DEVICE)
    x0 = base[..., ::2]
    w0 = torch.randn(C, 1, 5, 5, device=DEVICE) / 5
    with fastwin.set_backend("triton", strict=True):
        x, w = leaves(x0, w0)
        y = ops.dwconv2d(x, w, None, residual=True)
    g = torch.randn_like(y)
    fast = [y] + grads(y, [x, w], g)
    ref = []
    for dt in (torch.float32, torch.float64):
        xr, wr = leaves(x0, w0, dtype=dt)
        yr = dwconv2d_ref(xr, wr, None, True)
        ref.append([yr] + grads(yr, [xr, wr], g.to(dt)))
    check_all(fast, ref[0], ref[1], ["y", "grad_x", "grad_weight"], torch.float32)


def test_dwconv2d_wgrad_splits_and_determinism():
    """Many pixel splits (ranges crossing tile and batch boundaries) give the same grads, bitwise per run."""
    B, H, W, k = 2, 7, 9, 3
    x = make_x(B, C, H, W, "channels_last", torch.float32)
    w = torch.randn(C, 1, k, k, device=DEVICE)
    g = torch.randn_like(x)
    runs = [dwconv.dwconv2d_bwd_triton(g, x, w, True, "NCHW", pix_per_split=pps) for pps in (None, 37, 37)]
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
@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dwconv_layernorm_fwd_bwd(dtype, layout, k):
    B, H, W = LN_SHAPES[k]
    x0 = make_x(B, C, H, W, layout, dtype)
    params0 = [torch.randn(C, 1, k, k, device=DEVICE, dtype=dtype) / k] + [
        torch.randn(C, device=DEVICE, dtype=dtype) for _ in range(3)
    ]
    lay = op_layout(layout)
    with fastwin.set_backend("triton", strict=True):
        x, w, b, lw, lb = leaves(x0, *params0)
        tokens, normed = ops.dwconv_layernorm(x, w, b, lw, lb, 1e-6, layout=lay)
        assert ops.last_backend() == "triton"
    gt, gn = torch.randn_like(tokens), torch.randn_like(normed)
    fast = [tokens, normed] + grads((tokens, normed), [x, w, b, lw, lb], (gt, gn))

    ref = []
    for dt in (dtype, torch.float64):
        xr, wr, br, lwr, lbr = leaves(x0, *params0, dtype=dt)
        tr, nr = dwconv_layernorm_ref(xr, wr, br, lwr, lbr, 1e-6, lay)
        ref.append([tr, nr] + grads((tr, nr), [xr, wr, br, lwr, lbr], (gt.to(dt), gn.to(dt))))
    names = ["tokens", "normed", "grad_x", "grad_weight", "grad_bias", "grad_ln_weight", "grad_ln_bias"]
    check_all(fast, ref[0], ref[1], names, dtype)


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
    a = dwconv_layernorm.dwconv_layernorm_bwd_triton(gt, gn, x, w, lw, tokens, mean, rstd, "NHWC")
    b = dwconv_layernorm.dwconv_layernorm_bwd_triton(gt, gn, x, w, lw, tokens, mean, rstd, "NHWC", pix_per_split=7)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# torch.library registration
# ----------------------------------------------------------------------------------------------
def test_opcheck_dwconv2d():
    x = make_x(1, 4, 3, 5, "channels_last", torch.float32).requires_grad_(True)
    w = torch.randn(4, 1, 3, 3, device=DEVICE, requires_grad=True)
    b = torch.randn(4, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.fastwin.dwconv2d_fwd.default, (x, w, b, True, "NCHW"))
    g = torch.randn_like(x)
    torch.library.opcheck(torch.ops.fastwin.dwconv2d_bwd.default, (g, x.detach(), w.detach(), True, "NCHW"))


def test_opcheck_dwconv_layernorm():
    x = make_x(1, 4, 3, 5, "NHWC", torch.float32).requires_grad_(True)
    w, b, lw, lb = (torch.randn(*s, device=DEVICE, requires_grad=True) for s in ((4, 1, 3, 3), (4,), (4,), (4,)))
    torch.library.opcheck(torch.ops.fastwin.dwconv_layernorm_fwd.default, (x, w, b, lw, lb, 1e-6, "NHWC"))
    with torch.no_grad():
        tokens, normed, mean, rstd = torch.ops.fastwin.dwconv_layernorm_fwd(x, w, b, lw, lb, 1e-6, "NHWC")
    args = (torch.randn_like(tokens), torch.randn_like(normed), x.detach(), w.detach(), lw.detach(), tokens, mean, rstd,
            "NHWC")
    torch.library.opcheck(torch.ops.fastwin.dwconv_layernorm_bwd.default, args)


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
    with fastwin.set_backend("triton"), pytest.warns(RuntimeWarning, match=match):
        y = ops.dwconv2d(x, w)  # non-strict: the reference takes over
    assert ops.last_backend() == "reference"
    torch.testing.assert_close(y, dwconv2d_ref(x, w))


def test_supports_table():
    from fastwin.dispatch import Call

    def call(**params):
        return Call("dwconv2d", torch.device(DEVICE), torch.float32, False, tuple(sorted(params.items())))

    assert dwconv_ops.SUPPORTS["dwconv2d"](call(kernel_size=7, layout="NHWC")) is None
    assert "kernel_size" in dwconv_ops.SUPPORTS["dwconv2d"](call(kernel_size=4, layout="NCHW"))
    assert "layout" in dwconv_ops.SUPPORTS["dwconv_layernorm"](call(kernel_size=3, layout="CHWN"))
