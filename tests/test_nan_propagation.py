"""NaN and Inf in any input reach the outputs they affect, on every op and backend (SPEC §6).

Issue 22 item 2: one NaN in q (or in logit_scale) gave an all-zero output row on cpp, and torch's
CPU SDPA under the reference zeroed such rows too; a row that is masked entirely by -inf still gives
zeros (tests/test_conformance.py "windows w4 -inf rows"). A non-finite Swin V2 `logit_scale` is a
NaN-producing scale, refused with a ValueError (SPEC §7, item 6) on every backend.
"""
import pytest
import torch

from fastwin import ops
from tiny_cases import BACKENDS, CASES, inputs_or_skip, on, outs

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: thread hand-offs cost more than the work


def _set(tensors, i, index, value):
    t = tensors[i].detach().clone()
    t.view(-1)[index] = value
    return [t if j == i else x for j, x in enumerate(tensors)]


def _index(t, name):
    """A random element of t (for qkv_bias one of the k/v values that padded tokens carry: its q part
    reaches no output, as padded queries are cropped)."""
    n = t.numel()
    return int(torch.randint(2 * n // 3, n, ()) if name == "qkv_bias" else torch.randint(n, ()))


def _reference(case, tensors):
    with torch.no_grad():
        return outs(on(case, "reference", [None if t is None else t.double() for t in tensors], [])())


def _affected(case, tensors, i, k):
    """Per output, where d output / d tensors[i][k] is nonzero (the fp64 reference, forward mode)."""
    exact = [None if t is None else t.double() for t in tensors]
    one_hot = torch.zeros_like(exact[i])
    one_hot.view(-1)[k] = 1.0
    _, tangents = torch.func.jvp(on(case, "reference", exact, [i]), (exact[i],), (one_hot,))
    return [(t != 0).cpu() for t in outs(tangents)]


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("backend,device", BACKENDS, ids=lambda v: v)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_non_finite_input_reaches_the_outputs(case, backend, device, value):
    """For each input in turn, one element set to `value`: every output that the element affects
    (a nonzero derivative, fp64) and that the reference makes non-finite is
    non-finite, and nothing is non-finite that the fp64 reference keeps finite. (torch's conv also
    makes the outputs whose tap lies in the zero padding NaN, 0 * NaN: either is accepted.)"""
    tensors = inputs_or_skip(case, backend, device)
    for i, spec in enumerate(case.inputs):
        if tensors[i] is None:
            continue
        k = _index(tensors[i], spec.name)
        bad = _set(tensors, i, k, value)
        if spec.name == "logit_scale":  # SPEC §7: a NaN-producing scale is refused before any kernel runs
            with pytest.raises(ValueError, match="logit_scale must be finite"):
                on(case, backend, bad, [])()
            continue
        with torch.no_grad():
            got = outs(on(case, backend, bad, [])())
        want = _reference(case, bad)
        moved = _affected(case, tensors, i, k)
        for j, (g, w, m) in enumerate(zip(got, want, moved)):
            fast, upper = (~torch.isfinite(g)).cpu(), (~torch.isfinite(w)).cpu()
            lower = (m & upper).cpu()
            assert (fast | ~lower).all(), (f"{value} in {spec.name}: output {j} is finite at "
                                           f"{int((lower & ~fast).sum())} places it affects")
            assert (upper | ~fast).all(), (f"{value} in {spec.name}: output {j} is non-finite at "
                                           f"{int((fast & ~upper).sum())} places the reference keeps finite")
            if value != value:  # NaN reaches what it affects (an inf may meet exp(-inf) = 0 instead)
                assert (upper | ~m.cpu()).all(), f"NaN in {spec.name}: the reference keeps affected outputs finite"
        assert any(bool(m.any()) for m in moved), f"the case's {spec.name} affects no output"


def _nan_query(op, backend, device, dtype):
    """The output of `op` with one NaN in the query of token 1, head 0; heads = 2, d = 4."""
    heads, d = 2, 4
    if op == "attention":
        qkv = torch.randn(1, 4, 3 * heads * d, dtype=dtype, device=device)
        qkv[0, 1, 2] = float("nan")
        return ops.attention(qkv, heads, backend=backend).view(4, heads, d)
    qkv = torch.randn(1, 2, 2, 3 * heads * d, dtype=dtype, device=device)
    qkv[0, 0, 1, 2] = float("nan")  # token 1 of the single 2x2 window
    table = torch.randn(9, heads, dtype=dtype, device=device)
    if op == "window_attention":
        return ops.window_attention(qkv.view(1, 4, -1), heads, 2, table, backend=backend).view(4, heads, d)
    out = ops.shifted_window_attention(qkv, heads, 2, 0, table, logit_scale=(
        torch.full((heads,), 10.0, dtype=dtype, device=device) if op == "cosine" else None), backend=backend)
    return out.view(4, heads, d)


@pytest.mark.parametrize("backend,device", BACKENDS, ids=lambda v: v)
@pytest.mark.parametrize("op", ["shifted_window_attention", "cosine", "window_attention", "attention"])
def test_nan_query_gives_a_nan_row_not_zeros(op, backend, device):
    """The issue's reproduction: the query's own row (that head) is all NaN, every other row finite."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from fastwin import backends

    if not backends()[backend]:
        pytest.skip(backends().reasons[backend])
    dtype = torch.float32
    out = _nan_query(op, backend, device, dtype).cpu()
    assert out[1, 0].isnan().all(), f"{op} on {backend}: the NaN query's row is {out[1, 0].tolist()}"
    finite = torch.ones_like(out, dtype=torch.bool)
    finite[1, 0] = False
    assert torch.isfinite(out[finite]).all()
