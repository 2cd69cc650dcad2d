"""fastwin._C CPU kernels (`cpp` backend) against the reference, fwd + bwd, plus opcheck/gradcheck.

Skips cleanly when the extension is not built. Shapes are small: the machine has 2 shared cores.
"""
import pytest
import torch

import fastwin
from fastwin import ops
from fastwin.reference import (attention_ref, dwconv2d_ref, shift_mask, shifted_window_attention_ref,
                               window_attention_ref)
from tests.tolerance import assert_within_rule

pytestmark = pytest.mark.skipif(not fastwin.backends()["cpp"],
                                reason=f"cpp backend unavailable: {fastwin.backends().reasons.get('cpp')}")


def _check(fn_fast, fn_ref, inputs, dtype=torch.float32):
    """Run fast (cpp, strict) and reference in dtype and fp64; compare outputs and every gradient."""
    def run(fn, cast, backend):
        xs = [None if t is None else t.detach().to(cast).requires_grad_(t.is_floating_point()) for t in inputs]
        with fastwin.set_backend(backend, strict=True):
            out = fn(*xs)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(cast)
        out.backward(grad)
        return out, [None if x is None else x.grad for x in xs]

    fast, fast_g = run(fn_fast, dtype, "cpp")
    assert ops.last_backend() == "cpp"
    low, low_g = run(fn_ref, dtype, "reference")
    exact, exact_g = run(fn_ref, torch.float64, "reference")
    assert_within_rule(fast, low, exact, "output", dtype)
    for i, (f, lo, ex) in enumerate(zip(fast_g, low_g, exact_g)):
        if ex is not None:
            assert_within_rule(f, lo, ex, f"grad[{i}]", dtype)


SWIN_CASES = [  # (H, W, window, shift, heads, d)
    (14, 14, 7, 0, 2, 32), (14, 14, 7, 3, 2, 32), (10, 13, 7, 3, 1, 64), (9, 9, 12, 6, 1, 32),
    (16, 16, 8, 4, 2, 32), (7, 7, 7, 0, 2, 32), (12, 11, 8, 0, 1, 64),
]


@pytest.mark.parametrize("case", SWIN_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("pad_order", ["roll_pad", "pad_roll"])
@pytest.mark.parametrize("batch", [1, 2])
def test_shifted_window_attention(case, pad_order, batch):
    H, W, w, s, heads, d = case
    if pad_order == "pad_roll" and H % w == 0 and W % w == 0 and batch == 2:
        pytest.skip("both orders coincide on divisible maps; covered with batch 1")
    wh = min(w, H)  # window shrink is the caller's job; the op gets the effective window
    ww = min(w, W)
    s = 0 if (wh < w or ww < w) else s
    qkv = torch.randn(batch, H, W, 3 * heads * d)
    table = torch.randn((2 * wh - 1) * (2 * ww - 1), heads)
    qkv_bias = torch.randn(3 * heads * d)

    def fn(q, t, b):
        return ops.shifted_window_attention(q, heads, (wh, ww), (s, s) if s < min(wh, ww) else 0, t, b,
                                            pad_order=pad_order)

    _check(fn, fn, [qkv, table, qkv_bias])


def test_shifted_window_attention_noncontiguous_and_no_bias():
    heads, d = 2, 32
    base = torch.randn(2, 12, 10, 3 * heads * d * 2)
    qkv = base[..., ::2]  # strided channels
    assert not qkv.is_contiguous()
    fn = lambda q: ops.shifted_window_attention(q, heads, 7, 3)  # noqa: E731
    _check(fn, fn, [qkv])


@pytest.mark.parametrize("H,W,window,shift", [(5, 5, 12, 6), (3, 2, 8, 5), (1, 1, 7, 3), (2, 9, 4, 3)])
@pytest.mark.parametrize("pad_order", ["roll_pad", "pad_roll"])
def test_shift_larger_than_map(H, W, window, shift, pad_order):
    """Window (and shift) larger than the map, un-shrunk: the roll wraps more than once (was an OOB read)."""
    heads, d = 2, 32
    qkv = torch.randn(2, H, W, 3 * heads * d)
    table = torch.randn((2 * window - 1) ** 2, heads)
    qkv_bias = torch.randn(3 * heads * d)
    fn = lambda q, t, b: ops.shifted_window_attention(q, heads, window, shift, t, b, pad_order=pad_order)  # noqa: E731
    _check(fn, fn, [qkv, table, qkv_bias])


def test_denormal_mode_restored():
    """The kernels flush denormals while they run (masked -100 logits); the caller's mode must survive."""
    qkv = torch.randn(2, 14, 14, 3 * 2 * 32)
    with fastwin.set_backend("cpp", strict=True):
        ops.shifted_window_attention(qkv, 2, 7, 3)
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    assert (tiny * 0.5).item() != 0.0, "flush-to-zero leaked out of the cpp attention kernel"


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("d", [32, 64])
def test_window_attention(with_mask, d):
    heads, w = 2, 7
    mask = shift_mask(14, 14, (w, w), (3, 3)) if with_mask else None
    qkv = torch.randn(2 * 4, w * w, 3 * heads * d).transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous
    table = torch.randn(169, heads)
    fn = lambda q, t, m: ops.window_attention(q, heads, w, t, m)  # noqa: E731
    _check(fn, fn, [qkv, table, mask])


@pytest.mark.parametrize("n", [17, 197])
def test_global_attention(n):
    heads, d = 2, 32
    fn = lambda q: ops.attention(q, heads)  # noqa: E731
    _check(fn, fn, [torch.randn(2, n, 3 * heads * d)])


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("layout", ["NCHW", "channels_last", "NHWC"])
@pytest.mark.parametrize("residual", [False, True])
def test_dwconv2d(k, layout, residual):
    C = 6
    if layout == "NHWC":
        x = torch.randn(2, 9, 11, C)
    else:
        x = torch.randn(2, C, 9, 11)
        if layout == "channels_last":
            x = x.to(memory_format=torch.channels_last)
    lay = "NHWC" if layout == "NHWC" else "NCHW"
    fn = lambda x_, w_, b_: ops.dwconv2d(x_, w_, b_, residual, lay)  # noqa: E731
    _check(fn, fn, [x, torch.randn(C, 1, k, k), torch.randn(C)])


def test_low_precision_forward():
    heads, d = 2, 32
    qkv = torch.randn(1, 14, 14, 3 * heads * d)
    table = torch.randn(169, heads)
    exact = shifted_window_attention_ref(qkv.double(), heads, (7, 7), (3, 3), table.double())
    for dt in (torch.bfloat16, torch.float16):
        low = shifted_window_attention_ref(qkv.to(dt).float(), heads, (7, 7), (3, 3), table.to(dt).float()).to(dt)
        with fastwin.set_backend("cpp", strict=True):
            fast = ops.shifted_window_attention(qkv.to(dt), heads, 7, 3, table.to(dt))
        assert_within_rule(fast, low, exact, str(dt), dt)


def test_gradcheck_fp64():
    C_ops = torch.ops.fastwin_C
    qkv = torch.randn(1, 5, 6, 3 * 2 * 4, dtype=torch.float64, requires_grad=True)
    table = torch.randn(9, 2, dtype=torch.float64, requires_grad=True)
    qb = torch.randn(24, dtype=torch.float64, requires_grad=True)
    for pad_roll in (False, True):
        assert torch.autograd.gradcheck(
            lambda q, t, b: C_ops.swin_attn_fwd(q, 2, [2, 2], [1, 1], t, b, 0.5, pad_roll)[0], (qkv, table, qb))
    mask = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    wq = torch.randn(4, 4, 24, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, t, m: C_ops.win_attn_fwd(q, 2, [2, 2], t, m, 0.5)[0], (wq, table, mask))
    x = torch.randn(1, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x_, w_, b_: C_ops.dwconv2d_fwd(x_, w_, b_, True), (x, w, b))


def _opcheck_cases():
    f = torch.float32
    qkv = torch.randn(2, 6, 5, 24, dtype=f, requires_grad=True)
    table = torch.randn(9, 2, dtype=f, requires_grad=True)
    qb = torch.randn(24, dtype=f, requires_grad=True)
    wq = torch.randn(4, 4, 24, dtype=f, requires_grad=True)
    mask = shift_mask(4, 4, (2, 2), (1, 1))
    x = torch.randn(2, 3, 5, 4, dtype=f, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, dtype=f, requires_grad=True)
    b = torch.randn(3, dtype=f, requires_grad=True)
    return [
        ("swin_attn_fwd", (qkv, 2, [2, 2], [1, 1], table, qb, 0.5, True)),
        ("swin_attn_fwd", (qkv, 2, [2, 2], [0, 0], None, None, 0.5, False)),
        ("win_attn_fwd", (wq, 2, [2, 2], table, mask, 0.5)),
        ("attn_fwd", (wq, 2, 0.5)),
        ("dwconv2d_fwd", (x, w, b, True)),
        ("dwconv2d_fwd", (x.detach().to(memory_format=torch.channels_last).requires_grad_(), w, None, False)),
    ]


@pytest.mark.parametrize("case", range(6))
def test_opcheck(case):
    name, args = _opcheck_cases()[case]
    torch.library.opcheck(getattr(torch.ops.fastwin_C, name), args)


def test_opcheck_backward_ops():
    qkv = torch.randn(2, 6, 5, 24)
    table, qb = torch.randn(9, 2), torch.randn(24)
    out, lse = torch.ops.fastwin_C.swin_attn_fwd(qkv, 2, [2, 2], [1, 1], table, qb, 0.5, False)
    torch.library.opcheck(torch.ops.fastwin_C.swin_attn_bwd,
                          (torch.randn_like(out), qkv, out, lse, 2, [2, 2], [1, 1], table, qb, 0.5, False))
    wq = torch.randn(4, 4, 24)
    mask = shift_mask(4, 4, (2, 2), (1, 1))
    out, lse = torch.ops.fastwin_C.win_attn_fwd(wq, 2, [2, 2], table, mask, 0.5)
    torch.library.opcheck(torch.ops.fastwin_C.win_attn_bwd,
                          (torch.randn_like(out), wq, out, lse, 2, [2, 2], table, mask, 0.5, True))
    out, lse = torch.ops.fastwin_C.attn_fwd(wq, 2, 0.5)
    torch.library.opcheck(torch.ops.fastwin_C.attn_bwd, (torch.randn_like(out), wq, out, lse, 2, 0.5))
    x, w = torch.randn(2, 3, 5, 4), torch.randn(3, 1, 3, 3)
    torch.library.opcheck(torch.ops.fastwin_C.dwconv2d_bwd, (torch.randn_like(x), x, w, True, True))


def test_supports_refuses_dropout():
    from fastwin.backend import cpp_backend
    from fastwin.dispatch import Call
    call = Call("attention", torch.device("cpu"), torch.float32, False, (("dropout_p", 0.1),))
    assert "dropout" in cpp_backend.supports(call)


def test_bad_args_raise_in_cpp():
    with pytest.raises(RuntimeError, match="qkv last dim"):
        torch.ops.fastwin_C.attn_fwd(torch.randn(2, 4, 25), 2, 0.5)
    with pytest.raises(RuntimeError, match="rel_pos_bias_table must have shape"):
        torch.ops.fastwin_C.swin_attn_fwd(torch.randn(1, 4, 4, 24), 2, [2, 2], [0, 0], torch.randn(5, 2), None, 1.0,
                                          False)
