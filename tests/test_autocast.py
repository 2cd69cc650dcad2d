"""Fused ops and fastwin's models under `torch.autocast` (SPEC §6; issue 22 item 4).

Every op is matmul / conv work, which autocast runs in its lower precision: under autocast an op
takes fp32 inputs (activations in the autocast dtype next to fp32 weights, as the unfused modules
see them), computes in the autocast dtype on every backend and matches the reference run on inputs
cast to that dtype, within the tolerance rule. fastwin's Swin and UniFormer run under
`torch.autocast("cpu", torch.bfloat16)` (the fused MLP raised a dtype TypeError) and match the
reference backend's model under autocast.
"""
import pytest
import torch

import fastwin
from fastwin import testing
from fastwin.models.uniformer import UniFormer
from tests.helpers import BACKEND_DEVICES, tiny_swin
from tiny_cases import CASES, inputs_or_skip, on, outs

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: thread hand-offs cost more than the work

# (backend, device, autocast dtype): CPU bf16 here; the CUDA rows run where there is a GPU
BACKENDS = [(name, device, torch.bfloat16 if device == "cpu" else torch.float16) for name, device in BACKEND_DEVICES]


def _ids(v):
    return str(v).replace("torch.", "")


def _grads(outputs, leaves, cot):
    return torch.autograd.grad([(o.float() * c).sum() for o, c in zip(outputs, cot)], leaves, allow_unused=True)


@pytest.mark.parametrize("backend,device,dtype", BACKENDS, ids=_ids)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_op_follows_autocast(case, backend, device, dtype):
    """fp32 inputs under autocast: output in the autocast dtype (fp32 where an fp32 residual is added
    after the product, as in the unfused module), within the rule of the reference on inputs cast to
    the autocast dtype; gradients reach the fp32 inputs in fp32."""
    tensors = inputs_or_skip(case, backend, device, dtype)  # skips where the backend lacks the dtype
    tensors = [None if t is None else t.float().requires_grad_(spec.grad) for t, spec in zip(tensors, case.inputs)]
    leaves = [t for t, spec in zip(tensors, case.inputs) if t is not None and spec.grad]
    with torch.autocast(device, dtype):
        got = outs(on(case, backend, tensors, [])())
    low = outs(on(case, "reference", [None if t is None else t.detach().to(dtype) for t in tensors], [])())
    exact = outs(on(case, "reference", [None if t is None else t.detach().double() for t in tensors], [])())
    # the unfused `residual + linear(x)` adds an fp32 residual to the autocast-dtype product: fp32 out
    residual = dict(zip((spec.name for spec in case.inputs), tensors)).get("residual")
    want = dtype if residual is None else torch.promote_types(dtype, residual.dtype)
    for k, (g, lo, ex) in enumerate(zip(got, low, exact)):
        assert g.dtype == want, f"output {k} is {g.dtype} under autocast({dtype}), the unfused module's {want}"
        err, bound = testing.max_err(g, ex), testing.bound(lo, ex, dtype)
        assert err <= bound, f"output {k}: max error {err:.3e} > bound {bound:.3e}"
    cot = [torch.randn(o.shape, device=device) for o in got]
    for leaf, grad in zip(leaves, _grads(got, leaves, cot)):
        assert grad is None or (grad.dtype == torch.float32 and torch.isfinite(grad).all())


def _tiny_uniformer():
    return UniFormer(depth=(1, 1, 1, 1), img_size=32, num_classes=5, embed_dim=(16, 32, 32, 64), head_dim=16,
                     layer_scale=0.5)


MODELS = {"swin": (lambda: tiny_swin(depths=(2, 2), num_heads=(1, 2)), (2, 3, 44, 40)), "uniformer": (_tiny_uniformer, (2, 3, 64, 64))}


@pytest.mark.parametrize("device,dtype", [("cpu", torch.bfloat16), ("cuda", torch.float16)], ids=_ids)
@pytest.mark.parametrize("name", MODELS)
def test_model_under_autocast(name, device, dtype):
    """The auto backend's model under autocast vs the fp32 model: within 2x the reference backend's
    model under autocast (the unfused ops' precision) plus the dtype's floor."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    build, shape = MODELS[name]
    model = build().eval().to(device)
    x = torch.randn(*shape, device=device)
    with torch.no_grad():
        exact = model(x)
        with torch.autocast(device, dtype):
            got = model(x)
            with fastwin.set_backend("reference"):
                low = model(x)
    assert got.dtype == low.dtype == dtype
    err, bound = testing.max_err(got, exact), testing.bound(low, exact, dtype)
    assert err <= bound, f"{name} under autocast: max error {err:.3e} > bound {bound:.3e}"
