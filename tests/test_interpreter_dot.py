"""Under the CPU interpreter fastwin's Triton kernels see `tl.dot` summed in the GPU's order
(fastwin/kernels/triton/interpreter_dot.py): the same product gives the same bits in tiles of any shape,
as the dq and dk/dv kernels need for dS = P (dP - delta) to cancel as it does on the GPU."""
import pytest
import torch

import fastwin  # noqa: F401 (registers the Triton ops, which installs the dot)
from fastwin.kernels.triton import interpreting

pytestmark = pytest.mark.skipif(not interpreting() or not fastwin.backends()["triton"],
                                reason="the Triton interpreter (TRITON_INTERPRET=1) only")

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")


@triton.jit
def _tiled_dot(a, b, c, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    j = tl.program_id(1) * BN + tl.arange(0, BN)
    k = tl.arange(0, K)
    x = tl.load(a + i[:, None] * K + k[None, :])
    y = tl.load(b + j[:, None] * K + k[None, :])
    tl.store(c + i[:, None] * N + j[None, :], tl.dot(x, tl.trans(y), input_precision="ieee"))


def _product(a, b, bm, bn):
    c = torch.full((a.shape[0], b.shape[0]), float("nan"))
    _tiled_dot[(a.shape[0] // bm, b.shape[0] // bn)](a, b, c, a.shape[0], b.shape[0], a.shape[1], bm, bn)
    return c


def test_a_product_rounds_the_same_in_every_tiling():
    a, b = torch.randn(64, 16) * 3, torch.randn(64, 16) * 3
    whole = _product(a, b, 64, 64)
    for bm, bn in ((16, 16), (32, 32), (64, 16), (16, 64)):
        assert torch.equal(_product(a, b, bm, bn), whole), (bm, bn)
    exact = a.double() @ b.double().T  # and it is an fp32 product: within K roundings of the exact one
    assert (whole.double() - exact).abs().max() <= 16 * 2**-24 * (a.double().abs() @ b.double().abs().T).max()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_operands_give_their_exact_values_product(dtype):
    """bf16 operands reach the interpreter as raw uint16 bits: the dot must read them as the numbers
    they are (it returned garbage before), fp16 likewise, both accumulated in fp32."""
    a, b = (torch.randn(32, 16) * 2).to(dtype), (torch.randn(32, 16) * 2).to(dtype)
    got = _product(a, b, 32, 16)
    exact = a.double() @ b.double().T
    assert (got.double() - exact).abs().max() <= 16 * 2**-24 * (a.double().abs() @ b.double().abs().T).max()
    assert torch.equal(got, _product(a, b, 16, 32))
