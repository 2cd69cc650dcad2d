"""Whole models on the triton backend (interpreted on CPU) match the reference, forward and every gradient."""
import copy

import pytest
import torch

pytest.importorskip("triton")

import fastwin  # noqa: E402
from fastwin.models.swin import SwinTransformer  # noqa: E402
from tests.conftest import requires_cuda  # noqa: E402
from tests.tolerance import assert_within_rule  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

pytestmark = pytest.mark.skipif(not fastwin.backends()["triton"], reason="triton backend unavailable")


def tiny_swin():
    # 48 px, patch 4 -> maps 12, 6 (padded to 8), 3 and 2 (windows shrink, no shift): every code path.
    return SwinTransformer(img_size=48, patch_size=4, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                           window_size=4, num_classes=5, drop_path_rate=0.0)


def _run(model, x, backend, dtype):
    model = copy.deepcopy(model).to(DEVICE, dtype)
    with fastwin.set_backend(backend, strict=backend != "reference"):
        out = model(x.to(DEVICE, dtype))
        out.square().sum().backward()
    return out, {n: p.grad for n, p in model.named_parameters()}


def _compare_models(model, x, dtype):
    out, grads = _run(model, x, "triton", dtype)
    out_lp, grads_lp = _run(model, x, "reference", dtype)
    out_ex, grads_ex = _run(model, x, "reference", torch.float64)
    assert_within_rule(out, out_lp, out_ex, "logits", dtype, factor=4.0)
    for name in grads_ex:
        assert_within_rule(grads[name], grads_lp[name], grads_ex[name], f"grad {name}", dtype, factor=4.0)


def test_tiny_swin_triton_matches_reference():
    torch.manual_seed(0)
    model = tiny_swin()
    for p in model.parameters():  # non-trivial biases and tables, not the zero/0.02 init
        p.data.add_(0.05 * torch.randn_like(p))
    _compare_models(model, torch.randn(2, 3, 48, 44), torch.float32)


@requires_cuda
def test_swin_block_compiles_fullgraph_with_triton():
    from fastwin.layers.swin_block import SwinTransformerBlock

    block = SwinTransformerBlock(96, (14, 14), 3, window_size=7, shift_size=3).cuda()
    x = torch.randn(2, 14, 14, 96, device="cuda", requires_grad=True)
    with fastwin.set_backend("triton", strict=True):
        eager = block(x)
        compiled = torch.compile(block, fullgraph=True)(x)
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
        compiled.sum().backward()
