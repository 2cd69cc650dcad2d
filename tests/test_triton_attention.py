"""Triton fused attention: kernel-level properties the conformance table does not cover (determinism,
real Swin shapes on a GPU, torch.compile tracing into the kernels).

Parity with the reference over the SPEC §6 matrix is in tests/test_conformance.py; the op contract
(opcheck, direct calls, double backward) in tests/test_op_contract.py.
"""
import pytest
import torch

import fastwin
from fastwin import dispatch, testing
from tests.conftest import requires_cuda

if not fastwin.backends()["triton"]:
    pytest.skip(f"triton backend unavailable: {fastwin.backends().reasons.get('triton')}", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _swin_args(B, H, W, heads, d, window, dtype=torch.float32):
    C3 = 3 * heads * d
    qkv = torch.randn(B, H, W, C3, device=DEVICE, dtype=dtype)
    table = torch.randn((2 * window[0] - 1) * (2 * window[1] - 1), heads, device=DEVICE, dtype=dtype)
    return qkv, table, torch.randn(C3, device=DEVICE, dtype=dtype)


@pytest.mark.slow
def test_bias_grads_deterministic():
    """Table and qkv_bias gradients are fixed-order reductions: bitwise equal across runs."""
    qkv, table, qkv_bias = _swin_args(2, 10, 9, 1, 32, (7, 7))
    grads = []
    for _ in range(2):
        leaves = [t.detach().clone().requires_grad_() for t in (qkv, table, qkv_bias)]
        with fastwin.set_backend("triton", strict=True):
            out = fastwin.ops.shifted_window_attention(leaves[0], 1, 7, 3, leaves[1], leaves[2])
        grads.append(torch.autograd.grad(out, leaves, torch.ones_like(out)))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_runs_through_fastwin_ops():
    qkv, table, qkv_bias = _swin_args(1, 7, 9, 1, 16, (7, 7))
    with fastwin.set_backend("triton", strict=True), dispatch.record() as ran:
        fastwin.ops.shifted_window_attention(qkv, 1, 7, 3, table, qkv_bias)
    assert ran == [("shifted_window_attention", "triton")]


GPU_CASES = [
    testing.swin_case("swin-T stage-1 like 30x29 b2", 2, 30, 29, 3, 32, (7, 7), (3, 3)),
    testing.swin_case("swin-T stage-1 like 30x29 b2 pad_roll", 2, 30, 29, 3, 32, (7, 7), (3, 3), "pad_roll"),
    testing.swin_case("swin-B 384 like w12 26x26", 2, 26, 26, 2, 32, (12, 12), (6, 6)),
    testing.swin_case("w16 s8 20x18", 1, 20, 18, 1, 16, (16, 16), (8, 8)),
    testing.attention_case("attention N=1000 d64", 2, 1000, 4, 64),
    testing.attention_case("attention N=197 d64", 4, 197, 6, 64),
]


@requires_cuda
@pytest.mark.parametrize("dtype", testing.device_dtypes("cuda") if torch.cuda.is_available() else [],
                         ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: c.name)
def test_real_shapes_on_gpu(case, dtype):
    reason = testing.supported(case, "triton", DEVICE, dtype)
    if reason is not None:
        pytest.skip(reason)
    result = testing.run_case(case, "triton", dtype, DEVICE)
    assert result.ok, "; ".join(result.failures)


@requires_cuda
def test_torch_compile_fullgraph_traces_the_kernels():
    qkv, table, qkv_bias = _swin_args(2, 30, 29, 3, 32, (7, 7), torch.float16)

    def f(x, t, b):
        out = fastwin.ops.shifted_window_attention(x, 3, 7, 3, t, b, backend="triton")
        return out.float().square().sum()

    leaves = [t.detach().clone().requires_grad_() for t in (qkv, table, qkv_bias)]
    loss = torch.compile(f, fullgraph=True)(*leaves)
    grads = torch.autograd.grad(loss, leaves)
    eager_leaves = [t.detach().clone().requires_grad_() for t in (qkv, table, qkv_bias)]
    eager = f(*eager_leaves)
    eager_grads = torch.autograd.grad(eager, eager_leaves)
    torch.testing.assert_close(loss, eager, rtol=1e-3, atol=1e-2)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)
