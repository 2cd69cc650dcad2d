"""fastwin_C::linear_gelu_{fwd,bwd} (CPU): what is specific to the raw schemas (the optional saved
pre-activation, gradient masks, large strided rows, C++ argument checks).

Parity with the reference over dtypes and both GELU forms is in tests/test_conformance.py; opcheck,
gradcheck and double backward in tests/test_op_contract.py.
"""
import pytest
import torch
import torch.nn.functional as F

import fastwin

pytestmark = pytest.mark.skipif(not fastwin.backends()["cpp"],
                                reason=f"cpp backend unavailable: {fastwin.backends().reasons.get('cpp')}")

def _ops():
    return torch.ops.fastwin_C


def test_no_preact_unless_asked_and_grad_masks():
    x, w, b = torch.randn(4, 6), torch.randn(8, 6), torch.randn(8)
    out, pre = _ops().linear_gelu_fwd(x, w, b, "none", False)
    assert pre.numel() == 0
    torch.testing.assert_close(out, F.gelu(F.linear(x, w, b)), atol=1e-6, rtol=1e-5)
    _, pre = _ops().linear_gelu_fwd(x, w, b, "none", True)
    dx, dw, db = _ops().linear_gelu_bwd(torch.ones(4, 8), pre, x, w, b, "none", True, [False, True, False])
    assert dx.numel() == 0 and db.numel() == 0 and dw.shape == w.shape


def test_noncontiguous_input_and_large_rows():
    base = torch.randn(300, 2, 96)
    x = base[:, 1]  # strided rows
    w, b = torch.randn(384, 96) / 10, torch.randn(384)
    out, _ = _ops().linear_gelu_fwd(x, w, b, "none", False)
    torch.testing.assert_close(out, F.gelu(F.linear(x, w, b)), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("bad", ["approx", "weight", "bias", "preact"])
def test_bad_arguments_raise(bad):
    x, w, b = torch.randn(4, 6), torch.randn(8, 6), torch.randn(8)
    with pytest.raises(RuntimeError):
        if bad == "approx":
            _ops().linear_gelu_fwd(x, w, b, "erf", False)
        elif bad == "weight":
            _ops().linear_gelu_fwd(x, torch.randn(8, 5), b, "none", False)
        elif bad == "bias":
            _ops().linear_gelu_fwd(x, w, torch.randn(7), "none", False)
        else:
            _ops().linear_gelu_bwd(torch.ones(4, 8), torch.empty(0), x, w, b, "none", True, [True, True, True])
