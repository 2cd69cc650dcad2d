"""The cpp backend's fp32 channels-last depthwise conv kernel (csrc/cpu/cpu_math.cpp `dwconv_nhwc_rows`):
every code path of its register blocking against fp64 `F.conv2d` with the SPEC §6 rule — kernel sizes with
compile-time taps (3, 5, 7) and the generic one, maps narrower than a 4-pixel block plus its halo and
shorter than the kernel, channel counts off the 16-lane slices, residual and bias on and off, batches
split across threads — forward and backward through the public op, and UniFormer's inference forms that
call it directly."""
import pytest
import torch
import torch.nn.functional as F

import fastwin
from fastwin import ops
from tests.tolerance import assert_within_rule

pytestmark = pytest.mark.skipif(not fastwin.backends()["cpp"],
                                reason=f"cpp backend unavailable: {fastwin.backends().reasons.get('cpp')}")

CASES = [  # (B, C, H, W, k)
    (1, 16, 5, 9, 3), (2, 20, 7, 7, 3), (1, 33, 4, 13, 5), (3, 5, 3, 2, 5), (1, 48, 6, 11, 7), (1, 17, 2, 9, 7),
    (2, 16, 5, 6, 9), (1, 3, 1, 1, 3), (1, 64, 9, 10, 1), (2, 32, 12, 12, 5),
]


def _reference(x, w, b, residual):
    y = F.conv2d(x, w, b, padding=w.shape[-1] // 2, groups=x.shape[1])
    return y + x if residual else y


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_channels_last_fp32_forward_and_backward(case, residual):
    B, C, H, W, k = case
    torch.manual_seed(sum(case) * 7 + residual)
    x = (torch.randn(B, C, H, W) * 2).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(C, 1, k, k, requires_grad=True)
    b = torch.randn(C, requires_grad=True) if C % 2 else None
    g = torch.randn(B, C, H, W)
    if residual:  # the input gradient (the same kernel, flipped taps) then runs channels-last too
        g = g.contiguous(memory_format=torch.channels_last)
    with fastwin.set_backend("cpp", strict=True):
        out = ops.dwconv2d(x, w, b, residual=residual)
    assert out.is_contiguous(memory_format=torch.channels_last)
    leaves = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(out, leaves, g)
    exact = [t.detach().double().requires_grad_() for t in leaves]
    want = _reference(exact[0], exact[1], exact[2] if b is not None else None, residual)
    want_grads = torch.autograd.grad(want, exact, g.double())
    low = [t.detach().clone().requires_grad_() for t in leaves]
    low_out = _reference(low[0], low[1], low[2] if b is not None else None, residual)
    low_grads = torch.autograd.grad(low_out, low, g)
    assert_within_rule(out, low_out, want)
    for name, got, lo, ex in zip(("x", "weight", "bias"), grads, low_grads, want_grads):
        assert_within_rule(got, lo, ex, name=f"grad {name}")


def test_uniformer_inference_form_matches_the_reference():
    torch.manual_seed(3)
    model = fastwin.create_model("uniformer_small", depth=(1, 1, 1, 1), embed_dim=(16, 48, 32, 64), head_dim=16,
                                 num_classes=7).eval()
    x = torch.randn(2, 3, 72, 40)
    with torch.no_grad():
        with fastwin.set_backend("cpp", strict=True), fastwin.dispatch.record() as ran:
            got = model(x)
        with fastwin.set_backend("reference"):
            low = model(x)
        exact = model.double()(x.double())
    assert ("dwconv2d", "cpp") in set(ran)
    assert_within_rule(got, low, exact)
