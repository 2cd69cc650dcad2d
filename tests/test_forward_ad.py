"""Forward-mode AD and torch.func transforms through every op on every backend (SPEC §6).

`torch.func.jvp`, `torch.autograd.forward_ad`, `torch.func.grad`, `jacrev` and `vmap` through a
fastwin op must give what they give through the reference (fp64) within the tolerance rule, or
refuse with an error naming the op: never a zero tangent (issue 22 item 1: the cpp ops returned
zero tangents, and torch.func.grad / jacrev through them raised "must override setup_context").
Shapes are tiny: the Triton kernels run in the interpreter here, and jacrev runs one backward per
output element.
"""
import pytest
import torch
import torch.autograd.forward_ad as fwAD

import fastwin
from fastwin import testing
from fastwin.testing import Case

CASES = (
    testing.swin_case("swin w2 s1 3x3 padded", 1, 3, 3, 1, 4, (2, 2), (1, 1)),
    testing.swin_case("swin v2 cosine w2 s0x1 2x3", 1, 2, 3, 1, 4, (2, 2), (0, 1), "pad_roll", cosine=True),
    testing.window_case("windows w2 mask", 1, 1, 1, 4, (2, 2)),
    testing.attention_case("attention N=3", 1, 3, 1, 4),
    testing.dwconv_case("dwconv k3 residual", 1, 2, 3, 3, 3, residual=True),
    testing.dwconv_layernorm_case("dwconv+LN k3", 1, 2, 2, 3),
    testing.linear_gelu_case("linear+gelu", (2, 3), 4),
)

# (backend, device): fp64 where the backend takes it; the GPU rows run where there is one
BACKENDS = (("reference", "cpu"), ("cpp", "cpu"), ("triton", "cpu"), ("reference", "cuda"), ("cuda", "cuda"),
            ("triton", "cuda"))


def _dtype(backend):
    return torch.float32 if backend in ("triton", "cuda") else torch.float64


def _setup(case: Case, backend, device):
    """Inputs, the differentiable ones' positions, and f(*differentiable) running the op on `backend`."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if not fastwin.backends()[backend]:
        pytest.skip(f"{backend}: {fastwin.backends().reasons[backend]}")
    dtype = _dtype(backend)
    why = testing.supported(case, backend, device, dtype)
    if why is not None:
        pytest.skip(why)
    tensors = case.make(device, dtype)
    at = [i for i, (t, spec) in enumerate(zip(tensors, case.inputs)) if t is not None and spec.grad]

    def on(name, inputs):
        def f(*moving):
            full = list(inputs)
            for i, x in zip(at, moving):
                full[i] = x
            with fastwin.set_backend(name, strict=True):
                return case.fn(*full)

        return f

    return tensors, at, on


def _outs(out):
    return out if isinstance(out, tuple) else (out,)


def _check(fast, low, exact, what, dtype):
    """Each result within the rule; and some result so far from zero that a zero one would fail."""
    telling = False
    for i, (f, lo, ex) in enumerate(zip(_outs(fast), _outs(low), _outs(exact))):
        assert f is not None, f"{what} {i}: none (a silent zero)"
        err, bound = testing.max_err(f, ex), testing.bound(lo, ex, dtype)
        assert err <= bound, f"{what} {i}: max error {err:.3e} > bound {bound:.3e}"
        telling |= ex.abs().max().item() > 10 * bound
    assert telling, f"every exact {what} is within the bound of zero: the case cannot catch a zero"


def _reference_pair(f_of, tensors, at, transform):
    """transform(reference in the backend's dtype) and transform(reference in fp64)."""
    low = transform(f_of("reference", tensors), [tensors[i] for i in at])
    exact_in = [None if t is None else t.double() for t in tensors]
    exact = transform(f_of("reference", exact_in), [exact_in[i] for i in at])
    return low, exact


@pytest.mark.parametrize("backend,device", BACKENDS, ids=lambda v: v)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_jvp(case, backend, device):
    tensors, at, on = _setup(case, backend, device)
    tangents = [torch.randn_like(tensors[i]) for i in at]

    def jvp(f, primals):
        return torch.func.jvp(f, tuple(primals), tuple(t.to(p.dtype) for t, p in zip(tangents, primals)))[1]

    fast = jvp(on(backend, tensors), [tensors[i] for i in at])
    low, exact = _reference_pair(on, tensors, at, jvp)
    _check(fast, low, exact, "tangent", _dtype(backend))


@pytest.mark.parametrize("backend,device", BACKENDS, ids=lambda v: v)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_forward_ad_dual_tensors(case, backend, device):
    tensors, at, on = _setup(case, backend, device)
    tangents = [torch.randn_like(tensors[i]) for i in at]

    def dual(f, primals):
        with fwAD.dual_level():
            out = f(*[fwAD.make_dual(p, t.to(p.dtype)) for p, t in zip(primals, tangents)])
            return tuple(fwAD.unpack_dual(o).tangent for o in _outs(out))

    fast = dual(on(backend, tensors), [tensors[i] for i in at])
    low, exact = _reference_pair(on, tensors, at, dual)
    _check(fast, low, exact, "tangent", _dtype(backend))


def _cotangents(case, tensors):
    with fastwin.set_backend("reference"):
        return [torch.randn_like(o) for o in _outs(case.fn(*tensors))]


@pytest.mark.parametrize("backend,device", BACKENDS, ids=lambda v: v)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_func_grad(case, backend, device):
    tensors, at, on = _setup(case, backend, device)
    cot = _cotangents(case, tensors)

    def grad(f, primals):
        def loss(*xs):
            return sum((o * c.to(o)).sum() for o, c in zip(_outs(f(*xs)), cot))

        return torch.func.grad(loss, argnums=tuple(range(len(primals))))(*primals)

    fast = grad(on(backend, tensors), [tensors[i] for i in at])
    low, exact = _reference_pair(on, tensors, at, grad)
    _check(fast, low, exact, "gradient", _dtype(backend))


@pytest.mark.parametrize("backend,device", BACKENDS, ids=lambda v: v)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_jacrev(case, backend, device):
    tensors, at, on = _setup(case, backend, device)

    def jac(f, primals):  # d (first output) / d (first differentiable input)
        return torch.func.jacrev(lambda x, *rest: _outs(f(x, *rest))[0])(*primals)

    fast = jac(on(backend, tensors), [tensors[i] for i in at])
    low, exact = _reference_pair(on, tensors, at, jac)
    _check(fast, low, exact, "jacobian", _dtype(backend))


@pytest.mark.parametrize("backend,device", BACKENDS, ids=lambda v: v)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_vmap(case, backend, device):
    """vmap over a batch of two first inputs equals two separate calls on the same backend."""
    tensors, at, on = _setup(case, backend, device)
    first = at[0]
    batch = torch.stack([tensors[first], torch.randn_like(tensors[first])])
    f = on(backend, tensors)
    rest = [tensors[i] for i in at[1:]]
    got = torch.func.vmap(lambda x: f(x, *rest))(batch)
    for b in range(2):
        for g, want in zip(_outs(got), _outs(f(batch[b], *rest))):
            torch.testing.assert_close(g[b], want, rtol=1e-6, atol=1e-6)
