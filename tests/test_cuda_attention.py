"""The `cuda` backend's attention against the reference, forward and backward (SPEC section 6).

f16 / bf16 run on the tensor-core kernels (csrc/cuda/attention_mma*.cu), fp32 on the CUDA-core
kernels (csrc/cuda/attention.cu). Every input's gradient is checked (qkv, bias table, qkv_bias,
mask) with the rule of tests/tolerance.py against an fp64 reference: error <= 2x the reference's
own error in the same precision + a floor. Shapes cover shifted / unshifted, divisible /
non-divisible maps, both pad orders, windows of 7x7, 8x8, 12x12 and 16x16, head dims 16-128
(non-powers of two included), global attention up to ~1000 tokens, batch 1 and non-contiguous qkv.
FASTWIN_CUDA_ATTN_MODE / FASTWIN_CUDA_ATTN_SLOT force the kernels' resident / streaming modes and
multi-group backward slots, so that small shapes reach every path. Outputs are poisoned: fast
calls run in torch's deterministic mode, which fills `empty` tensors with NaN, so an element a
kernel fails to write fails the comparison. tests/test_cuda_emulation.py runs the same kernels on
a CPU emulator.
"""
import contextlib
import os

import pytest
import torch

import fastwin
from fastwin import ops
from fastwin.reference import window as ref_window
from tests.layouts import QKV_LAYOUTS, strided_qkv
from tests.tolerance import assert_within_rule

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available() or not fastwin.backends()["cuda"],
                       reason="needs a CUDA device and the cuda backend"),
]

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
DEVICE, FAST = "cuda", "cuda"  # the harness also runs as-is on ("cpu", "cpp")


@contextlib.contextmanager
def plan(mode="auto", per_slot=None):
    """Force the tensor-core kernels' mode ("resident" where it fits / "streaming") and the number of
    groups per backward slot (read by the launcher at every call)."""
    keys = ("FASTWIN_CUDA_ATTN_MODE", "FASTWIN_CUDA_ATTN_SLOT")
    old = {k: os.environ.get(k) for k in keys}
    os.environ[keys[0]] = mode
    if per_slot:
        os.environ[keys[1]] = str(per_slot)
    else:
        os.environ.pop(keys[1], None)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(fn, inputs, dtype, backend, grad):
    xs = [None if t is None else t.detach().to(DEVICE, dtype).requires_grad_() for t in inputs]
    fast = backend == FAST
    prev = torch.are_deterministic_algorithms_enabled()
    if fast:  # outputs the kernels allocate with `empty` start as NaN: an unwritten element fails
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with fastwin.set_backend(backend, strict=True):
            out = fn(*xs)
            out.backward(grad.to(out.device, out.dtype))
    finally:
        torch.use_deterministic_algorithms(prev)
    return out.detach(), [None if x is None else x.grad for x in xs]


def compare(fn, inputs, dtype, names, check_grads=True):
    """fast (cuda) vs fp64 reference, bounded by the low-precision reference's own error."""
    with fastwin.set_backend("reference"), torch.no_grad():
        shape = fn(*[None if t is None else t.to(DEVICE) for t in inputs]).shape
    grad = torch.randn(shape, dtype=torch.float64)
    exact, eg = _run(fn, inputs, torch.float64, "reference", grad)
    low, lg = _run(fn, inputs, dtype, "reference", grad)
    fast, fg = _run(fn, inputs, dtype, FAST, grad)
    assert_within_rule(fast, low, exact, "output", dtype)
    if not check_grads:
        return fast, fg
    for name, f, lo, ex in zip(names, fg, lg, eg):
        if ex is None:
            assert f is None or not f.abs().any(), f"{name}: reference has no gradient, cuda gave one"
            continue
        assert f is not None, f"{name}: missing gradient"
        assert_within_rule(f, lo, ex, f"grad {name}", dtype)
    return fast, fg


def _swin_inputs(B, H, W, w, heads, d, scale_q=1.0):
    qkv = torch.randn(B, H, W, 3 * heads * d, dtype=torch.float64)
    qkv[..., :heads * d] *= scale_q
    table = torch.randn((2 * w - 1) ** 2, heads, dtype=torch.float64)
    qkv_bias = torch.randn(3 * heads * d, dtype=torch.float64)
    return [qkv, table, qkv_bias]


# (B, H, W, window, shift, heads, head_dim): N = 49 / 64 / 144 / 256, padded and not, batch 1,
# d = 16 / 20 (not a multiple of 8) / 32 / 48 / 64 / 80 / 128, a window larger than the map.
SWIN_CASES = [
    (2, 14, 14, 7, 3, 3, 32),
    (1, 10, 13, 7, 3, 2, 32),
    (2, 16, 16, 8, 4, 2, 64),
    (1, 20, 27, 12, 6, 2, 32),
    (1, 32, 32, 16, 8, 1, 32),
    (2, 9, 9, 9, 0, 1, 128),
    (2, 7, 7, 7, 0, 2, 48),
    (1, 11, 9, 7, 3, 2, 20),
    (1, 8, 8, 8, 4, 2, 80),
    (2, 5, 5, 12, 6, 1, 16),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("pad_order", ["roll_pad", "pad_roll"])
@pytest.mark.parametrize("case", SWIN_CASES, ids=lambda c: "B{}-{}x{}-w{}-s{}-h{}-d{}".format(*c))
def test_shifted_window_attention(case, pad_order, dtype):
    B, H, W, w, s, heads, d = case
    fn = lambda q, t, b: ops.shifted_window_attention(q, heads, w, s, t, b, pad_order=pad_order)  # noqa: E731
    compare(fn, _swin_inputs(B, H, W, w, heads, d), dtype, ["qkv", "table", "qkv_bias"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", ["resident", "streaming"])
@pytest.mark.parametrize("case", [(3, 14, 14, 7, 3, 2, 32), (2, 20, 27, 12, 6, 2, 32), (1, 32, 32, 16, 8, 1, 32),
                                  (2, 16, 16, 8, 4, 2, 128)],
                         ids=lambda c: "B{}-{}x{}-w{}-s{}-h{}-d{}".format(*c))
def test_shifted_window_attention_modes(case, mode, dtype):
    """Both kernel modes, and backward slots of several groups (the dS sums of the table gradient
    accumulated across windows)."""
    B, H, W, w, s, heads, d = case
    fn = lambda q, t, b: ops.shifted_window_attention(q, heads, w, s, t, b, pad_order="pad_roll")  # noqa: E731
    with plan(mode, per_slot=3):
        compare(fn, _swin_inputs(B, H, W, w, heads, d), dtype, ["qkv", "table", "qkv_bias"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_saturated_softmax_gradients(dtype):
    """Large logits (near one-hot softmax): delta = sum P dP must come from fp32, not the rounded
    output, for the gradients to stay within 2x the reference's own error."""
    fn = lambda q, t, b: ops.shifted_window_attention(q, 2, 7, 3, t, b)  # noqa: E731
    compare(fn, _swin_inputs(2, 14, 14, 7, 2, 32, scale_q=8.0), dtype, ["qkv", "table", "qkv_bias"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", QKV_LAYOUTS)
def test_non_contiguous_qkv(layout, dtype):
    B, H, W, heads, d = 2, 10, 13, 2, 32
    C3 = 3 * heads * d
    if layout == "channels_strided":  # channel stride H * W: element-wise loads
        qkv = torch.randn(B, C3, H, W, dtype=torch.float64).permute(0, 2, 3, 1)
    elif layout == "misaligned":  # base pointer off 16-byte alignment
        qkv = torch.randn(B, H, W, C3 + 1, dtype=torch.float64)[..., 1:]
    else:  # rows padded: 16-byte copies with a pixel stride != 3C
        qkv = torch.randn(B, H, W, C3 + 8, dtype=torch.float64)[..., :C3]
    table = torch.randn(13 * 13, heads, dtype=torch.float64)
    qkv_bias = torch.randn(C3, dtype=torch.float64)

    def fn(q, t, b):
        return ops.shifted_window_attention(strided_qkv(q, layout), heads, 7, 3, t, b)

    compare(fn, [qkv, table, qkv_bias], dtype, ["qkv", "table", "qkv_bias"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["auto", "streaming"])
@pytest.mark.parametrize("mask_kind", ["shift", "random", "none"])
def test_window_attention(mask_kind, mode, dtype):
    """Given windows: bias table + [nW, N, N] mask, gradients for qkv, table and mask."""
    heads, d, w = 2, 32, 7
    if mask_kind == "shift":
        mask = ref_window.shift_mask(14, 14, (w, w), (3, 3)).double()  # [4, 49, 49]
    elif mask_kind == "random":
        mask = torch.randn(4, w * w, w * w, dtype=torch.float64)
    else:
        mask = None
    qkv = torch.randn(8, w * w, 3 * heads * d, dtype=torch.float64)
    table = torch.randn((2 * w - 1) ** 2, heads, dtype=torch.float64)
    fn = lambda q, t, m=None: ops.window_attention(q, heads, w, t, m)  # noqa: E731
    inputs = [qkv, table] + ([mask] if mask is not None else [])
    with plan(mode, per_slot=2):
        compare(fn, inputs, dtype, ["qkv", "table", "mask"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", [(2, 197, 3, 64), (1, 196, 5, 64), (3, 49, 8, 64), (1, 577, 2, 64),
                                  (1, 1030, 1, 128), (2, 64, 4, 96), (1, 300, 2, 32)],
                         ids=lambda c: "B{}-N{}-h{}-d{}".format(*c))
def test_global_attention(case, dtype):
    B, N, heads, d = case
    fn = lambda q: ops.attention(q, heads)  # noqa: E731
    compare(fn, [torch.randn(B, N, 3 * heads * d, dtype=torch.float64)], dtype, ["qkv"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_global_attention_resident(dtype):
    with plan("resident"):
        compare(lambda q: ops.attention(q, 2), [torch.randn(2, 150, 3 * 2 * 32, dtype=torch.float64)], dtype, ["qkv"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fully_masked_row(dtype):
    """A query whose mask row is all -inf: output 0 and zero gradients, never NaN (as the
    reference's SDPA math path); every other row as usual."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    heads, d, w = 2, 32, 7
    N = w * w
    mask = torch.zeros(2, N, N, dtype=torch.float64)
    mask[0, 5, :] = float("-inf")
    mask[1, 7, 3:] = float("-inf")  # partially masked row
    qkv = torch.randn(4, N, 3 * heads * d, dtype=torch.float64)
    table = torch.randn((2 * w - 1) ** 2, heads, dtype=torch.float64)
    fn = lambda q, t: ops.window_attention(q, heads, w, t, mask.to(q))  # noqa: E731
    with sdpa_kernel([SDPBackend.MATH]):
        fast, grads = compare(fn, [qkv, table], dtype, ["qkv", "table"])
    masked = fast.view(2, 2, N, -1)[:, 0, 5]  # windows b_ with b_ % nW == 0, query 5
    assert torch.equal(masked, torch.zeros_like(masked))
    dq = grads[0].view(2, 2, N, 3, heads, d)[:, 0, 5, 0]
    assert torch.equal(dq, torch.zeros_like(dq))
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_backward_is_deterministic(dtype):
    """No atomics: the same call gives bit-identical gradients (padding, table, several groups per
    slot)."""
    B, H, W, w, s, heads, d = 3, 10, 13, 7, 3, 2, 32
    qkv, table, qkv_bias = (t.to(DEVICE, dtype) for t in _swin_inputs(B, H, W, w, heads, d))
    grad = torch.randn(B, H, W, heads * d, device=DEVICE, dtype=dtype)
    results = []
    with plan("auto", per_slot=2), fastwin.set_backend(FAST, strict=True):
        for _ in range(3):
            xs = [t.detach().clone().requires_grad_() for t in (qkv, table, qkv_bias)]
            ops.shifted_window_attention(xs[0], heads, w, s, xs[1], xs[2]).backward(grad)
            results.append([x.grad.clone() for x in xs])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16], ids=str)
def test_swin_t_stage1_shape(dtype):
    """The real Swin-T stage-1 window geometry (56x56, window 7, shift 3, 3 heads of 32) at batch 4:
    many windows per slot, all four tile kinds."""
    fn = lambda q, t, b: ops.shifted_window_attention(q, 3, 7, 3, t, b)  # noqa: E731
    compare(fn, _swin_inputs(4, 56, 56, 7, 3, 32), dtype, ["qkv", "table", "qkv_bias"])
