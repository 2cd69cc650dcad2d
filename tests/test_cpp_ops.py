"""fastwin._C CPU kernels: what is specific to them (floating-point mode, C++ argument checks, refusals).

Parity with the reference is in tests/test_conformance.py, the op contract (opcheck, gradcheck, direct
calls, double backward) in tests/test_op_contract.py. Skips cleanly when the extension is not built.
"""
import pytest
import torch

import fastwin
from fastwin import dispatch, ops

pytestmark = pytest.mark.skipif(not fastwin.backends()["cpp"],
                                reason=f"cpp backend unavailable: {fastwin.backends().reasons.get('cpp')}")


def test_denormal_mode_restored():
    """The kernels flush denormals while they run (masked -100 logits); the caller's mode must survive."""
    qkv = torch.randn(2, 14, 14, 3 * 2 * 32)
    with fastwin.set_backend("cpp", strict=True):
        ops.shifted_window_attention(qkv, 2, 7, 3)
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    assert (tiny * 0.5).item() != 0.0, "flush-to-zero leaked out of the cpp attention kernel"


def test_supports_refuses_dropout():
    from fastwin.backend import cpp_backend
    call = dispatch.AttentionCall("attention", "cpu", torch.float32, False, 2, 32, 50, dropout_p=0.1)
    assert "dropout" in cpp_backend.supports(call)


def test_bad_args_raise_in_cpp():
    with pytest.raises(RuntimeError, match="qkv last dim"):
        torch.ops.fastwin_C.attention_fwd(torch.randn(2, 4, 25), 2, 0.5)
    with pytest.raises(RuntimeError, match="rel_pos_bias_table must have shape"):
        torch.ops.fastwin_C.shifted_window_attention_fwd(torch.randn(1, 4, 4, 24), torch.randn(5, 2), None, 2, [2, 2],
                                                         [0, 0], 1.0, False)
