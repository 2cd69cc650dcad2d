"""Triton fused attention kernels vs the pure-PyTorch reference (SPEC §5-6), forward and backward.

Without CUDA the kernels run under TRITON_INTERPRET=1 on CPU tensors (set in conftest), where every
program instance is interpreted in Python: shapes stay tiny. bf16 runs only on CUDA (the
interpreter's bf16 tl.dot is broken).
"""
import pytest
import torch

triton = pytest.importorskip("triton")

import fastwin  # noqa: E402
from fastwin.reference.attention import attention_ref  # noqa: E402
from fastwin.reference.window import shifted_window_attention_ref, window_attention_ref  # noqa: E402
from tests.conftest import requires_cuda  # noqa: E402
from tests.tolerance import assert_within_rule  # noqa: E402

ops = pytest.importorskip("fastwin.kernels.triton.window_attention_ops")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    """Launchers fill what they allocate with NaN, so any element a kernel fails to write shows up."""
    monkeypatch.setenv("FASTWIN_POISON", "1")


def _leaf(t):
    return None if t is None else t.detach().clone().requires_grad_(True)


def _check(fast_fn, ref_fn, inputs, dtype, names):
    """Compare fast(inputs) with ref(inputs) in fp64 and in `dtype`: output and grads of every input."""
    fast_in = [_leaf(t) for t in inputs]
    out = fast_fn(*fast_in)
    grad = torch.randn_like(out)
    exact_in = [_leaf(t.double()) if t is not None else None for t in inputs]
    lowp_in = [_leaf(t) for t in inputs]
    exact = ref_fn(*exact_in)
    lowp = ref_fn(*lowp_in)
    assert_within_rule(out, lowp, exact, "output", dtype)
    leaves = [(n, f, e, lp) for n, f, e, lp in zip(names, fast_in, exact_in, lowp_in) if f is not None]
    g_fast = torch.autograd.grad(out, [f for _, f, _, _ in leaves], grad)
    g_exact = torch.autograd.grad(exact, [e for _, _, e, _ in leaves], grad.double(), allow_unused=True)
    g_lowp = torch.autograd.grad(lowp, [lp for _, _, _, lp in leaves], grad, allow_unused=True)
    for (name, f, _, _), gf, ge, gl in zip(leaves, g_fast, g_exact, g_lowp):
        ge = torch.zeros_like(f, dtype=torch.float64) if ge is None else ge
        gl = torch.zeros_like(f) if gl is None else gl
        assert_within_rule(gf, gl, ge, f"grad {name}", dtype)


def _swin_inputs(B, H, W, heads, d, window, dtype, table=True, bias=True, qkv=None):
    C = heads * d
    if qkv is None:
        qkv = torch.randn(B, H, W, 3 * C, device=DEVICE, dtype=dtype)
    tab = torch.randn((2 * window[0] - 1) * (2 * window[1] - 1), heads, device=DEVICE, dtype=dtype) if table else None
    qkv_bias = torch.randn(3 * C, device=DEVICE, dtype=dtype) if bias else None
    return qkv, tab, qkv_bias


def _run_swin(B, H, W, heads, d, window, shift, order, dtype, table=True, bias=True, qkv=None, scale=None):
    qkv, tab, qkv_bias = _swin_inputs(B, H, W, heads, d, window, dtype, table, bias, qkv)

    def fast(x, t, b):
        return ops.shifted_window_attention_triton(x, heads, window, shift, t, b, scale, order)

    def ref(x, t, b):
        return shifted_window_attention_ref(x, heads, window, shift, t, b, scale, order)

    _check(fast, ref, [qkv, tab, qkv_bias], dtype, ["qkv", "rel_pos_bias_table", "qkv_bias"])


# (B, H, W, heads, d, window, shift, pad order, dtype)
SWIN_CASES = [
    pytest.param(1, 14, 14, 1, 32, (7, 7), (0, 0), "roll_pad", torch.float32, id="w7-s0-div-fp32"),
    pytest.param(2, 14, 14, 1, 32, (7, 7), (3, 3), "roll_pad", torch.float32, id="w7-s3-div-b2-fp32"),
    pytest.param(1, 10, 9, 2, 32, (7, 7), (3, 3), "roll_pad", torch.float32, id="w7-s3-nondiv-rollpad-fp32"),
    pytest.param(1, 10, 9, 1, 32, (7, 7), (3, 3), "pad_roll", torch.float32, id="w7-s3-nondiv-padroll-fp32"),
    pytest.param(1, 10, 9, 1, 64, (7, 7), (3, 3), "pad_roll", torch.float16, id="w7-s3-nondiv-padroll-d64-fp16"),
    pytest.param(1, 9, 12, 1, 32, (7, 7), (3, 3), "roll_pad", torch.float16, id="w7-s3-nondiv-rollpad-fp16"),
    pytest.param(1, 14, 14, 1, 64, (7, 7), (3, 3), "roll_pad", torch.float16, id="w7-s3-div-d64-fp16"),
    pytest.param(2, 7, 7, 1, 32, (7, 7), (0, 0), "roll_pad", torch.float32, id="w7-shrunk-b2-fp32"),
    pytest.param(1, 12, 12, 1, 32, (8, 8), (4, 4), "roll_pad", torch.float32, id="w8-s4-nondiv-fp32"),
    pytest.param(1, 8, 8, 1, 32, (8, 8), (4, 4), "pad_roll", torch.float16, id="w8-s4-div-fp16"),
    pytest.param(1, 12, 12, 1, 64, (12, 12), (0, 0), "roll_pad", torch.float16, id="w12-shrunk-d64-fp16"),
    pytest.param(1, 8, 10, 1, 32, (4, 8), (2, 4), "pad_roll", torch.float32, id="w4x8-s2x4-nondiv-fp32"),
]


@pytest.mark.parametrize("B,H,W,heads,d,window,shift,order,dtype", SWIN_CASES)
def test_shifted_window_attention(B, H, W, heads, d, window, shift, order, dtype):
    _run_swin(B, H, W, heads, d, window, shift, order, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("order", ["roll_pad", "pad_roll"])
def test_shifted_window_attention_w12_shifted(order):
    """Window 12 (N = 144: several query and key blocks per window) on a padded, shifted map."""
    _run_swin(1, 14, 14, 1, 32, (12, 12), (6, 6), order, torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("window,shift,H,W", [((16, 16), (8, 8), 20, 18), ((24, 24), (12, 12), 24, 24)])
def test_shifted_window_attention_large_windows(window, shift, H, W):
    """Windows 16 and 24 (N = 256, 576: padded to 256, 1024 keys in the dq kernel)."""
    _run_swin(1, H, W, 1, 16, window, shift, "roll_pad", torch.float16)


@pytest.mark.parametrize("table,bias", [(False, True), (True, False)], ids=["no-table", "no-qkv-bias"])
def test_shifted_window_attention_optional_inputs(table, bias):
    _run_swin(1, 10, 9, 1, 32, (7, 7), (3, 3), "roll_pad", torch.float32, table=table, bias=bias, scale=0.3)


def test_shifted_window_attention_non_contiguous():
    """qkv as a transposed slice of a wider tensor: arbitrary map and channel strides."""
    heads, d = 1, 32
    wide = torch.randn(1, 9, 10, 3 * heads * d + 16, device=DEVICE)
    qkv = wide[..., 8:8 + 3 * heads * d].transpose(1, 2)  # [1, 10, 9, 96], non-contiguous
    assert not qkv.is_contiguous()
    _run_swin(1, 10, 9, heads, d, (7, 7), (3, 3), "pad_roll", torch.float32, qkv=qkv)


@requires_cuda
@pytest.mark.parametrize("order", ["roll_pad", "pad_roll"])
def test_shifted_window_attention_cuda_shapes(order):
    """Real Swin shapes on the GPU: several heads, bf16, batch 2, non-divisible map."""
    for dtype in DTYPES:
        _run_swin(2, 30, 29, 3, 32, (7, 7), (3, 3), order, dtype)
        _run_swin(2, 26, 26, 2, 32, (12, 12), (6, 6), order, dtype)


def test_bias_grads_deterministic():
    qkv, tab, qkv_bias = _swin_inputs(1, 10, 9, 1, 32, (7, 7), torch.float32)
    grads = []
    for _ in range(2):
        ins = [_leaf(t) for t in (qkv, tab, qkv_bias)]
        out = ops.shifted_window_attention_triton(ins[0], 1, (7, 7), (3, 3), ins[1], ins[2], None, "roll_pad")
        grads.append(torch.autograd.grad(out, ins, torch.ones_like(out)))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------- given windows

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "no-mask"])
def test_window_attention(dtype, with_mask):
    window, heads, d, nW = (7, 7), 1, 32, 2
    N = 49
    qkv = torch.randn(2 * nW, N, 3 * heads * d, device=DEVICE, dtype=dtype)
    tab = torch.randn(13 * 13, heads, device=DEVICE, dtype=dtype)
    mask = None
    if with_mask:  # Swin-like 0 / -100 mask, different per window
        mask = torch.where(torch.rand(nW, N, N, device=DEVICE) < 0.3, -100.0, 0.0).to(dtype)

    def fast(x, t):
        return ops.window_attention_triton(x, heads, window, t, mask)

    def ref(x, t):
        return window_attention_ref(x, heads, window, t, None if mask is None else mask.to(x.dtype))

    _check(fast, ref, [qkv, tab], dtype, ["qkv", "rel_pos_bias_table"])


def test_window_attention_no_table_non_contiguous():
    heads, d, N = 2, 16, 16
    qkv = torch.randn(3, 3 * heads * d, N, device=DEVICE).transpose(1, 2)

    def fast(x):
        return ops.window_attention_triton(x, heads, (4, 4), None, None, 0.5)

    def ref(x):
        return window_attention_ref(x, heads, (4, 4), None, None, 0.5)

    _check(fast, ref, [qkv], torch.float32, ["qkv"])


# ------------------------------------------------------------------------------- global attention

@pytest.mark.parametrize("N,d,dtype", [(100, 32, torch.float32), (77, 64, torch.float16)])
def test_attention(N, d, dtype):
    heads = 1
    qkv = torch.randn(1, N, 3 * heads * d, device=DEVICE, dtype=dtype)
    _check(lambda x: ops.attention_triton(x, heads), lambda x: attention_ref(x, heads), [qkv], dtype, ["qkv"])


@pytest.mark.slow
def test_attention_long():
    qkv = torch.randn(1, 1024, 3 * 32, device=DEVICE)
    _check(lambda x: ops.attention_triton(x, 1), lambda x: attention_ref(x, 1), [qkv], torch.float32, ["qkv"])


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_cuda_shapes(dtype):
    qkv = torch.randn(2, 1000, 3 * 4 * 64, device=DEVICE, dtype=dtype)
    _check(lambda x: ops.attention_triton(x, 4), lambda x: attention_ref(x, 4), [qkv], dtype, ["qkv"])


# ------------------------------------------------------------------------------- dispatch, registration

def test_dispatch_through_fastwin_ops():
    qkv, tab, qkv_bias = _swin_inputs(1, 7, 9, 1, 16, (7, 7), torch.float32)
    with fastwin.set_backend("triton", strict=True):
        out = fastwin.ops.shifted_window_attention(qkv, 1, 7, 3, tab, qkv_bias)
        assert fastwin.ops.last_backend() == "triton"
    ref = shifted_window_attention_ref(qkv, 1, (7, 7), (3, 3), tab, qkv_bias)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_supports_refuses_with_reasons():
    from fastwin.dispatch import Call

    def call(op, dtype=torch.float32, **params):
        base = dict(head_dim=32, window_size=(7, 7), dropout_p=0.0)
        base.update(params)
        return Call(op, torch.device(DEVICE), dtype, True, tuple(sorted(base.items())))

    assert ops.SUPPORTS["shifted_window_attention"](call("shifted_window_attention")) is None
    assert "dropout" in ops.SUPPORTS["attention"](call("attention", dropout_p=0.1))
    assert "head_dim" in ops.SUPPORTS["window_attention"](call("window_attention", head_dim=48))
    assert "float64" in ops.SUPPORTS["attention"](call("attention", dtype=torch.float64))
    assert "tokens" in ops.SUPPORTS["window_attention"](call("window_attention", window_size=(40, 40)))
    if DEVICE == "cpu":
        assert "interpreter" in ops.SUPPORTS["attention"](call("attention", dtype=torch.bfloat16))


def _opcheck(op, args):
    torch.library.opcheck(op, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_opcheck_shifted_window_attention():
    qkv, tab, qkv_bias = _swin_inputs(1, 4, 6, 1, 16, (4, 4), torch.float32)
    args = [_leaf(qkv), _leaf(tab), _leaf(qkv_bias), 1, 4, 4, 2, 2, 0.25, False]
    _opcheck(torch.ops.fastwin.shifted_window_attention_fwd.default, args)
    out, lse = torch.ops.fastwin.shifted_window_attention_fwd(*[a.detach() if torch.is_tensor(a) else a for a in args])
    bwd_args = [torch.randn_like(out), qkv, tab, qkv_bias, out, lse, 1, 4, 4, 2, 2, 0.25, False, True, True]
    _opcheck(torch.ops.fastwin.shifted_window_attention_bwd.default, bwd_args)


def test_opcheck_window_and_global_attention():
    qkv = torch.randn(2, 16, 3 * 16, device=DEVICE)
    tab = torch.randn(49, 1, device=DEVICE)
    mask = torch.zeros(2, 16, 16, device=DEVICE)
    _opcheck(torch.ops.fastwin.window_attention_fwd.default, [_leaf(qkv), _leaf(tab), mask, 1, 4, 4, 0.25])
    _opcheck(torch.ops.fastwin.attention_fwd.default, [_leaf(qkv), 1, 0.25])


def test_opcheck_aot_dispatch():
    """The full opcheck (adds aot_dispatch_dynamic: tracing with symbolic shapes + autograd)."""
    qkv, tab, qkv_bias = _swin_inputs(1, 4, 6, 1, 16, (4, 4), torch.float32)
    torch.library.opcheck(torch.ops.fastwin.shifted_window_attention_fwd.default,
                          [_leaf(qkv), _leaf(tab), _leaf(qkv_bias), 1, 4, 4, 2, 2, 0.25, False])


@requires_cuda
def test_torch_compile_fullgraph():
    qkv, tab, qkv_bias = _swin_inputs(2, 30, 29, 3, 32, (7, 7), torch.float16)
    leaves = [_leaf(t) for t in (qkv, tab, qkv_bias)]

    def f(x, t, b):
        return ops.shifted_window_attention_triton(x, 3, (7, 7), (3, 3), t, b, None, "roll_pad").float().square().sum()

    compiled = torch.compile(f, fullgraph=True)
    loss = compiled(*leaves)
    grads = torch.autograd.grad(loss, leaves)
    eager_leaves = [_leaf(t) for t in (qkv, tab, qkv_bias)]
    eager = f(*eager_leaves)
    eager_grads = torch.autograd.grad(eager, eager_leaves)
    torch.testing.assert_close(loss, eager, rtol=1e-3, atol=1e-2)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)
