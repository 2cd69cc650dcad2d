"""The Triton softmax at large logits rounds no worse than the fp32 reference (issue 22 item 10).

Swin V2's cosine attention multiplies cosines by logit scales up to 100, so its logits reach ~100.
Logits scaled to base 2 before the row max is subtracted (s * log2 e, then - m) are rounded once more
at their full magnitude: ~5e-6 of error per logit there, as large as the fp32 reference's whole error,
which is what made the V2 conformance case's fp32 gradients brush against their bound. The kernels
keep natural units and scale only s - m, which is exact near the max.

Here the logits are integers up to ~150 (q and k hold small integers, scale 1), so the dot products are
exact in fp32 and every error left is the softmax's own. The SPEC §6 floor (1e-5) would hide that
difference, so the output's bound here is 2x the fp32 reference's error plus 1e-7 of the largest value
(the old kernels missed it by 1.2-2.3x, these keep within half of it); the gradient, whose largest
error is one element's and varies more from draw to draw, is held to the SPEC §6 rule.
"""
import pytest
import torch

pytest.importorskip("triton")

import fastwin  # noqa: E402
from fastwin import ops  # noqa: E402

_FLOOR = 1e-7  # of the largest output value: the output's bound
_SPEC_FLOOR = 1e-5  # fp32, SPEC §6: the gradient's


def _run(backend, qkv, cot, heads, window):
    leaf = qkv.detach().clone().requires_grad_()
    with fastwin.set_backend(backend, strict=True):
        out = ops.window_attention(leaf, num_heads=heads, window_size=window, scale=1.0)
    (grad,) = torch.autograd.grad(out, leaf, cot.to(out.dtype))
    return out.double(), grad.double()


@pytest.mark.parametrize("window", [(4, 4), (8, 16)], ids=["one key block", "two key blocks"])
def test_large_integer_logits(window):
    heads, d = 2, 16
    n = window[0] * window[1]
    qkv = torch.randn(3, n, 3 * heads * d, dtype=torch.float64)
    q_k = torch.randint(0, 4, (3, n, 2 * heads * d)).double()  # logits q . k: integers in [0, 144]
    qkv[..., : 2 * heads * d] = q_k
    cot = torch.randn(3, n, heads * d, dtype=torch.float64)
    exact = _run("reference", qkv, cot, heads, window)
    low = _run("reference", qkv.float(), cot, heads, window)
    fast = _run("triton", qkv.float(), cot, heads, window)
    for name, e, lo, f, floor in zip(("output", "grad qkv"), exact, low, fast, (_FLOOR, _SPEC_FLOOR)):
        ref_err = (lo - e).abs().max().item()
        err = (f - e).abs().max().item()
        bound = 2 * ref_err + floor * max(e.abs().max().item(), 1.0)
        assert err <= bound, f"{name}: triton error {err:.3e} > bound {bound:.3e} (fp32 reference {ref_err:.3e})"
