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

    out = shifted_window_attention_ref(torch.randn(1, 0, 5, C3), None, None, HEADS, (7, 7), (3, 3))
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


# ------------------------------------------------------------------- issue 22.5: depthwise conv, empty maps

def _conv_backends():
    return [pytest.param("auto")] + _backends()


@pytest.mark.parametrize("backend", _conv_backends())
@pytest.mark.parametrize("bchw", [(0, 4, 5, 5), (2, 0, 5, 5), (2, 4, 0, 5), (2, 4, 5, 0)])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_dwconv_empty_map_gives_an_empty_result_on_every_backend(backend, bchw, layout):
    """Before: `reference` / `auto` raised F.conv2d's errors for C = 0 or a map smaller than the kernel."""
    B, C, H, W = bchw
    shape = (B, C, H, W) if layout == "NCHW" else (B, H, W, C)
    x = torch.randn(shape, requires_grad=True)
    weight, bias = torch.randn(C, 1, 3, 3, requires_grad=True), torch.randn(C, requires_grad=True)
    ln_w, ln_b = torch.randn(C, requires_grad=True), torch.randn(C, requires_grad=True)
    with fastwin.set_backend(backend, strict=backend != "auto"):
        for residual in (False, True):
            out = ops.dwconv2d(x, weight, bias, residual=residual, layout=layout)
            assert out.shape == shape and out.dtype == x.dtype
        tokens, normed = ops.dwconv_layernorm(x, weight, bias, ln_w, ln_b, layout=layout)
        assert tokens.shape == normed.shape == (B, H * W, C)
        grads = _grads(out + 0 * (tokens.sum() + normed.sum()), x, weight, bias, ln_w, ln_b)
    assert grads[0].shape == x.shape
    for g, t in zip(grads[1:], (weight, bias, ln_w, ln_b)):  # nothing convolved: no gradient, or a zero one
        assert g is None or (g.shape == t.shape and not g.any())


# ------------------------------------------------- issue 22.6: non-finite logit_scale and LayerNorm eps

@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("op", ["window_attention", "shifted_window_attention"])
def test_non_finite_logit_scale_is_value_error(op, bad):
    """Before: accepted, and the output was NaN (SPEC §7: NaN-producing scales are a ValueError)."""
    logit_scale = torch.tensor([2.0, bad])
    call = {
        "window_attention": lambda ls: ops.window_attention(torch.randn(2, 4, C3), HEADS, 2, logit_scale=ls),
        "shifted_window_attention": lambda ls: ops.shifted_window_attention(torch.randn(1, 3, 3, C3), HEADS, 2, 1,
                                                                            logit_scale=ls),
    }[op]
    with pytest.raises(ValueError, match="logit_scale must be finite"):
        call(logit_scale)
    assert call(torch.tensor([2.0, 30.0])).isfinite().all()


def test_non_finite_logit_scale_under_vmap_is_still_refused():
    """The check reads through torch.func wrappers (a vmap batch cannot be bool()-ed)."""
    qkv = torch.randn(3, 2, 4, C3)
    good, bad = torch.ones(3, HEADS), torch.ones(3, HEADS)
    bad[1, 0] = math.nan
    attend = torch.func.vmap(lambda q, ls: ops.window_attention(q, HEADS, 2, logit_scale=ls, backend="reference"))
    assert attend(qkv, good).shape == (3, 2, 4, HEADS * D)
    with pytest.raises(ValueError, match="logit_scale must be finite"):
        attend(qkv, bad)


def test_swin_v2_attention_refuses_a_nan_logit_scale_parameter_once_per_update():
    from fastwin.layers.swin_v2_block import WindowAttentionV2

    attn = WindowAttentionV2(32, 2, HEADS).eval()
    x = torch.randn(3, 4, 32)
    with torch.no_grad():
        assert attn(x).isfinite().all()
        attn.logit_scale[1] = math.inf  # clamped to log(100) by the module: finite logits, accepted
        assert attn(x).isfinite().all()
        attn.logit_scale[0] = math.nan  # an in-place update: the module checks the new value
        with pytest.raises(ValueError, match="logit_scale must be free of NaN"):
            attn(x)
        attn.logit_scale.fill_(1.0)
        assert attn(x).isfinite().all()


@pytest.mark.parametrize("eps", [math.inf, -math.inf, math.nan, 0.0, -1e-6])
def test_dwconv_layernorm_refuses_a_non_finite_or_non_positive_eps(eps):
    """Before: eps=inf was accepted (every normalized value becomes 0 / NaN)."""
    x, w = torch.randn(1, 4, 5, 5), torch.randn(4, 1, 3, 3)
    with pytest.raises(ValueError, match="eps must be a positive finite float"):
        ops.dwconv_layernorm(x, w, None, None, None, eps=eps)
    with pytest.raises(TypeError, match="eps must be a float"):
        ops.dwconv_layernorm(x, w, None, None, None, eps="1e-6")
    assert ops.dwconv_layernorm(x, w, None, None, None, eps=1e-5)[1].isfinite().all()


def test_logit_scale_check_keeps_fullgraph_compile():
    """The value check is skipped while torch.compile traces (reading values would break the graph)."""
    torch._dynamo.reset()
    attend = torch.compile(lambda q, ls: ops.window_attention(q, HEADS, 2, logit_scale=ls, backend="reference"),
                           fullgraph=True, backend="eager")
    qkv, logit_scale = torch.randn(2, 4, C3), torch.tensor([2.0, 30.0])
    torch.testing.assert_close(attend(qkv, logit_scale),
                               ops.window_attention(qkv, HEADS, 2, logit_scale=logit_scale, backend="reference"))
