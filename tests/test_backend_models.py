"""Whole tiny models on each fast backend match the reference: forward and every parameter gradient.

Triton runs under its CPU interpreter when there is no GPU; cpp runs where fastwin._C was built.
The dispatcher's recorder proves the fast backend actually ran the ops it implements.
"""
import copy

import pytest
import torch

import fastwin
from fastwin import dispatch
from fastwin.models.uniformer import UniFormer
from tests.conftest import requires_cuda
from tests.helpers import FAST, tiny_swin
from tests.tolerance import assert_within_rule

BACKENDS = [pytest.param(b, marks=pytest.mark.slow) if b == "triton" and not torch.cuda.is_available() else b
            for b in FAST]  # the Triton interpreter runs whole models slowly
DEVICE = {"triton": "cuda" if torch.cuda.is_available() else "cpu", "cpp": "cpu", "cuda": "cuda"}


def tiny_uniformer(conv_stem):
    # Both block kinds (CBlocks in stages 1-2, SABlocks in 3-4), layer scale on the SABlocks. Inputs keep
    # the last map >= 2x2: train-mode BatchNorm over 2 samples x 1 pixel would amplify rounding noise.
    return UniFormer(depth=(1, 1, 1, 1), img_size=32, num_classes=5, embed_dim=(16, 32, 32, 64), head_dim=16,
                     conv_stem=conv_stem, layer_scale=0.5)


MODELS = {
    "swin": (tiny_swin, (2, 3, 48, 44)),
    "uniformer-patch-stem-ls": (lambda: tiny_uniformer(False), (2, 3, 68, 76)),
    "uniformer-conv-stem-ls": (lambda: tiny_uniformer(True), (2, 3, 64, 64)),
}


def _run(model, x, backend, dtype, train, record=None):
    model = copy.deepcopy(model).to(DEVICE.get(backend, "cpu"), dtype).train(train)
    with fastwin.set_backend(backend), dispatch.record() as ran:
        out = model(x.to(model.head.weight.device, dtype))
        out.square().sum().backward()
    if record is not None:
        record.extend(ran)
    return out, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("backend", BACKENDS or [pytest.param("none", marks=pytest.mark.skip("no fast backend"))])
def test_tiny_model_matches_reference(backend, model_name, train):
    if model_name == "swin" and not train:
        pytest.skip("Swin has no train/eval-dependent layers beyond dropout (0 here); train covers it")
    torch.manual_seed(0)
    build, shape = MODELS[model_name]
    model = build()
    for p in model.parameters():  # non-trivial biases, tables and norms instead of the init constants
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.randn(*shape)
    record = []
    out, grads = _run(model, x, backend, torch.float32, train, record)
    fast_ops = {op for op, name in record if name == backend}
    impls = dispatch._module(backend).IMPLS
    expected = {op for op, _ in record} & set(impls)
    assert fast_ops == expected, f"{backend} did not run {expected - fast_ops}"
    out_lp, grads_lp = _run(model, x, "reference", torch.float32, train)
    out_ex, grads_ex = _run(model, x, "reference", torch.float64, train)
    assert_within_rule(out, out_lp, out_ex, "logits", torch.float32, factor=4.0)
    for name in grads_ex:
        assert_within_rule(grads[name], grads_lp[name], grads_ex[name], f"grad {name}", torch.float32, factor=4.0)


@requires_cuda
@pytest.mark.parametrize("backend", [b for b in ("triton", "cuda") if fastwin.backends()[b]])
def test_swin_block_compiles_fullgraph(backend):
    from fastwin.layers.swin_block import SwinTransformerBlock

    block = SwinTransformerBlock(96, (14, 14), 3, window_size=7, shift_size=3).cuda()
    x = torch.randn(2, 14, 14, 96, device="cuda", requires_grad=True)
    with fastwin.set_backend(backend, strict=True):
        eager = block(x)
        compiled = torch.compile(block, fullgraph=True)(x)
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
        compiled.sum().backward()
