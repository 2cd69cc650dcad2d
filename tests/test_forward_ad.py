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
from tiny_cases import BACKENDS, CASES, differentiable, dtype_of, inputs_or_skip, on, outs

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: thread hand-offs cost more than the work


def _setup(case, backend, device):
    tensors = inputs_or_skip(case, backend, device)
    return tensors, differentiable(case, tensors), lambda name, inputs: on(case, name, inputs,
                                                                          differentiable(case, inputs))


def _check(fast, low, exact, what, dtype):
    """Each result within the rule; and some result so far from zero that a zero one would fail."""
    telling = False
    for i, (f, lo, ex) in enumerate(zip(outs(fast), outs(low), outs(exact))):
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


def _against_reference(case, backend, device, make_transform, what):
    """make_transform(case, inputs, differentiable positions) -> transform(f, primals); the transform of the
    op on `backend` against the reference's (same dtype and fp64), within the tolerance rule."""
    tensors, at, on = _setup(case, backend, device)
    transform = make_transform(case, tensors, at)
    fast = transform(on(backend, tensors), [tensors[i] for i in at])
    low, exact = _reference_pair(on, tensors, at, transform)
    _check(fast, low, exact, what, dtype_of(backend))


def _jvp(case, tensors, at):
    tangents = [torch.randn_like(tensors[i]) for i in at]
    return lambda f, primals: torch.func.jvp(f, tuple(primals), tuple(t.to(p) for t, p in zip(tangents, primals)))[1]


def _dual(case, tensors, at):
    tangents = [torch.randn_like(tensors[i]) for i in at]

    def dual(f, primals):
        with fwAD.dual_level():
            out = f(*[fwAD.make_dual(p, t.to(p)) for p, t in zip(primals, tangents)])
            return tuple(fwAD.unpack_dual(o).tangent for o in outs(out))

    return dual


def _grad(case, tensors, at):
    with fastwin.set_backend("reference"):
        cot = [torch.randn_like(o) for o in outs(case.fn(*tensors))]

    def grad(f, primals):
        def loss(*xs):
            return sum((o * c.to(o)).sum() for o, c in zip(outs(f(*xs)), cot))

        return torch.func.grad(loss, argnums=tuple(range(len(primals))))(*primals)

    return grad


def _jacrev(case, tensors, at):  # d (first output) / d (first differentiable input)
    return lambda f, primals: torch.func.jacrev(lambda x, *rest: outs(f(x, *rest))[0])(*primals)


@pytest.mark.parametrize("transform", ["jvp", "forward_ad dual tensors", "torch.func.grad", "jacrev"])
@pytest.mark.parametrize("backend,device", BACKENDS, ids=lambda v: v)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_transform_matches_the_reference(case, backend, device, transform):
    make, what = {"jvp": (_jvp, "tangent"), "forward_ad dual tensors": (_dual, "tangent"),
                  "torch.func.grad": (_grad, "gradient"), "jacrev": (_jacrev, "jacobian")}[transform]
    _against_reference(case, backend, device, make, what)


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
        for g, want in zip(outs(got), outs(f(batch[b], *rest))):
            torch.testing.assert_close(g[b], want, rtol=1e-6, atol=1e-6)
