"""Double backward (create_graph=True) through every op on every backend (SPEC §6; issue 22 item 8).

The reference failed with a frozen bias table ("derivative for
aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented": torch's fused CPU SDPA
has no double backward, and it was chosen whenever no input of the mask required grad). The compiled
backends differentiate the reference for the second order (fastwin.backend.library), so they are
exact wherever the reference is: gradgradcheck in fp64 where the backend takes fp64, and a
Hessian-vector product within the tolerance rule in fp32 elsewhere.
"""
import pytest
import torch

from fastwin import ops, testing
from tiny_cases import BACKENDS, CASES, differentiable, dtype_of, inputs_or_skip, on, outs

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: thread hand-offs cost more than the work


@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("table", ["frozen table", "trainable table"])
def test_gradgradcheck_bias_table(backend, table):
    """The issue's reproduction: shifted windows over a padded map, the table frozen or trained."""
    qkv = torch.randn(1, 3, 3, 24, dtype=torch.float64, requires_grad=True)
    bias_table = torch.randn(9, 2, dtype=torch.float64, requires_grad=table == "trainable table")
    qkv_bias = torch.randn(24, dtype=torch.float64, requires_grad=True)

    def f(qkv, qkv_bias, *trainable):
        t = trainable[0] if trainable else bias_table
        return ops.shifted_window_attention(qkv, 2, 2, 1, t, qkv_bias, backend=backend)

    inputs = (qkv, qkv_bias) + ((bias_table,) if table == "trainable table" else ())
    assert torch.autograd.gradgradcheck(f, inputs, fast_mode=True)


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_gradgradcheck_frozen_mask(backend):
    qkv = torch.randn(2, 4, 12, dtype=torch.float64, requires_grad=True)
    mask = torch.where(torch.rand(2, 4, 4) < 0.3, -100.0, 0.0).double()
    assert torch.autograd.gradgradcheck(lambda q: ops.window_attention(q, 1, 2, None, mask, backend=backend), (qkv,),
                                        fast_mode=True)


@pytest.mark.parametrize("backend,device", BACKENDS, ids=lambda v: v)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_double_backward(case, backend, device):
    """gradgradcheck where the backend takes fp64; else the Hessian-vector product of
    <outputs, cotangent> against the fp64 reference's, within the tolerance rule."""
    tensors = inputs_or_skip(case, backend, device)
    at = differentiable(case, tensors)
    primals = [tensors[i].detach().requires_grad_() for i in at]
    if dtype_of(backend) == torch.float64:
        assert torch.autograd.gradgradcheck(on(case, backend, tensors, at), primals, fast_mode=True)
        return
    cot = [torch.randn_like(o) for o in outs(on(case, "reference", tensors, [])())]
    vec = [torch.randn_like(p) for p in primals]

    def hvp(name, inputs, dtype):
        xs = [inputs[i].detach().to(dtype).requires_grad_() for i in at]
        out = outs(on(case, name, inputs, at)(*xs))
        grads = torch.autograd.grad(sum((o * c.to(o)).sum() for o, c in zip(out, cot)), xs, create_graph=True)
        second = torch.autograd.grad(sum((g * v.to(g)).sum() for g, v in zip(grads, vec)), xs, allow_unused=True)
        return [torch.zeros_like(x) if s is None else s for x, s in zip(xs, second)]

    dtype = dtype_of(backend)
    fast = hvp(backend, tensors, dtype)
    low = hvp("reference", tensors, dtype)
    exact = hvp("reference", [None if t is None else t.double() for t in tensors], torch.float64)
    for k, (f, lo, ex) in enumerate(zip(fast, low, exact)):
        err, bound = testing.max_err(f, ex), testing.bound(lo, ex, dtype)
        assert err <= bound, f"{case.inputs[at[k]].name}: second-order max error {err:.3e} > bound {bound:.3e}"
