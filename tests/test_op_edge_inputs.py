"""Edge inputs of the functional ops (issue #12, items 5 and 7).

Zero-size batch or map dims give a clean empty result, with zero gradients for every input, on every
backend; a qkv whose last dim is 0 (no head channels) is a ValueError naming `qkv`; a finite scale
that overflows the input's dtype is refused, since every logit would become inf/NaN (SPEC §7).
"""
import math

import pytest
import torch

import fastwin
from fastwin import ops
from fastwin.ops import checks

HEADS, D = 2, 16  # head dim 16: every backend takes it (Triton's smallest)
C3 = 3 * HEADS * D


def _backends():
    table, out = fastwin.backends(), []
    for name in ("reference", "cpp", "triton"):
        skip = [] if table[name] else [pytest.mark.skip(reason=f"{name}: {table.reasons.get(name)}")]
        out.append(pytest.param(name, marks=skip))
    return out


def _grads(out, *inputs):
    out.sum().backward()
    return [t.grad for t in inputs]


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("shape", [(0, 9, 10), (2, 0, 10), (2, 9, 0), (0, 0, 0)])
@pytest.mark.parametrize("shift", [0, 3])
def test_shifted_window_attention_zero_size_map(backend, shape, shift):
    qkv = torch.randn(*shape, C3, requires_grad=True)
    table = torch.randn(13 * 13, HEADS, requires_grad=True)
    bias = torch.randn(C3, requires_grad=True)
    with fastwin.set_backend(backend, strict=True):
        out = ops.shifted_window_attention(qkv, HEADS, 7, shift, table, bias)
        assert out.shape == (*shape, HEADS * D) and out.dtype == qkv.dtype
        g_qkv, *g_rest = _grads(out, qkv, table, bias)
        assert g_qkv.shape == qkv.shape
        for g, t in zip(g_rest, (table, bias)):  # nothing attended: no gradient, or a zero one
            assert g is None or (g.shape == t.shape and not g.any())


@pytest.mark.parametrize("backend", _backends())
def test_window_and_global_attention_zero_size(backend):
    with fastwin.set_backend(backend, strict=True):
        qkv = torch.randn(0, 49, C3, requires_grad=True)
        out = ops.window_attention(qkv, HEADS, 7, torch.randn(169, HEADS), torch.zeros(2, 49, 49))
        assert out.shape == (0, 49, HEADS * D) and _grads(out, qkv)[0].shape == qkv.shape
        for shape in [(0, 10), (2, 0)]:
            qkv = torch.randn(*shape, C3, requires_grad=True)
            out = ops.attention(qkv, HEADS)
            assert out.shape == (*shape, HEADS * D) and _grads(out, qkv)[0].shape == qkv.shape


@pytest.mark.parametrize("op,shape", [
    ("shifted_window_attention", (1, 8, 8, 0)),
    ("window_attention", (4, 49, 0)),
    ("attention", (2, 10, 0)),
])
def test_zero_head_dim_is_value_error_naming_qkv(op, shape):
    args = {"shifted_window_attention": (HEADS, 7, 3), "window_attention": (HEADS, 7), "attention": (HEADS,)}[op]
    with pytest.raises(ValueError, match=r"qkv last dim must be 3 \* num_heads \* head_dim.*got 0"):
        getattr(ops, op)(torch.randn(shape), *args)


def test_reference_zero_size_map_directly():
    from fastwin.reference import shifted_window_attention_ref

    out = shifted_window_attention_ref(torch.randn(1, 0, 5, C3), HEADS, (7, 7), (3, 3))
    assert out.shape == (1, 0, 5, HEADS * D)


# ---------------------------------------------------------------------------------------- 7. scale

@pytest.mark.parametrize("dtype,bad,good", [
    (torch.float32, 1e39, 3e38),
    (torch.float16, 7e4, 6e4),
    (torch.bfloat16, 1e39, 3e38),
])
def test_scale_overflowing_the_dtype_is_refused(dtype, bad, good):
    for v in (bad, -bad):
        with pytest.raises(ValueError, match=f"scale .* overflows {dtype}"):
            checks.scale(v, 16, dtype)
    assert checks.scale(good, 16, dtype) == good
    assert checks.scale(bad, 16) == bad  # the old two-argument call: no dtype, no overflow check
    assert checks.scale(1e39, 16, torch.float64) == 1e39
    assert checks.scale(None, 16, dtype) == 0.25


def test_scale_checks_head_dim():
    with pytest.raises(ValueError, match="head_dim must be positive"):
        checks.scale(None, 0)


@pytest.mark.parametrize("op", ["attention", "window_attention", "shifted_window_attention"])
def test_ops_refuse_a_scale_that_overflows_fp32(op):
    """Without the check, 1e39 becomes inf in fp32 and the output is NaN."""
    call = {
        "attention": lambda s: ops.attention(torch.randn(1, 4, C3), HEADS, s),
        "window_attention": lambda s: ops.window_attention(torch.randn(1, 4, C3), HEADS, 2, scale=s),
        "shifted_window_attention": lambda s: ops.shifted_window_attention(torch.randn(1, 2, 2, C3), HEADS, 2, scale=s),
    }[op]
    with pytest.raises(ValueError, match="overflows torch.float32"):
        call(1e39)
    assert not call(1e3).isnan().any()
    assert math.isfinite(checks.scale(1e39, D))
