"""Kernel benchmarks: shifted-window attention at Swin stage shapes, global attention, depthwise conv.

Each result's extra_info: case, impl, shapes, dtype, minimal bytes (read q/k/v once, write the
output once), achieved GB/s and % of the measured copy bandwidth, FLOP/s, and (added at the end of
the run) speedup over every baseline measured in the same run.
"""
from __future__ import annotations

import pytest
import torch

import fastwin
from baselines import flex_available, window_impl
from harness import run_timed, size_set
from shapes import conv_cases, global_cases, swin_cases

DTYPE = torch.bfloat16 if torch.cuda.is_available() else torch.float32
WINDOW_IMPLS = ("reference", "reference+compile", "official_matmul", "flex", "triton", "cuda", "cpp")
FAST = ("triton", "cuda", "cpp")


def pytest_generate_tests(metafunc):
    sizes = size_set(metafunc.config)
    if "swin_case" in metafunc.fixturenames:
        metafunc.parametrize("swin_case", swin_cases(sizes), ids=lambda c: c.name)
    if "global_case" in metafunc.fixturenames:
        metafunc.parametrize("global_case", global_cases(sizes), ids=lambda c: c.name)
    if "conv_case" in metafunc.fixturenames:
        metafunc.parametrize("conv_case", conv_cases(sizes), ids=lambda c: c.name)


def _skip_unless_runnable(impl, device):
    if impl == "flex":
        reason = flex_available(device)
        if reason:
            pytest.skip(reason)
    backend = impl.split("+")[0]
    if backend in FAST:
        table = fastwin.backends()
        if not table[backend]:
            pytest.skip(f"{backend}: {table.reasons[backend]}")
        if backend == "triton" and device.type == "cpu":
            pytest.skip("triton on CPU is the interpreter (a correctness tool, not a benchmark)")
        if backend == "cpp" and device.type == "cuda":
            pytest.skip("cpp is the CPU backend")
        if backend == "cuda" and device.type == "cpu":
            pytest.skip("cuda needs a GPU")


def _record(benchmark, copy_bw, case_name, impl, mode, nbytes, flops, shapes):
    median = benchmark.stats.stats.median
    gbs = nbytes / median / 1e9
    benchmark.extra_info.update(
        case=f"{case_name} {mode}", impl=impl, mode=mode, dtype=str(DTYPE)[6:], shapes=shapes,
        min_bytes=nbytes, achieved_GBps=round(gbs, 2), pct_of_copy_bw=round(100 * gbs / copy_bw, 1),
        copy_bw_GBps=round(copy_bw, 1), TFLOPs=round(flops / median / 1e12, 3))


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", WINDOW_IMPLS)
def test_shifted_window_attention(benchmark, device, copy_bandwidth, swin_case, impl, mode):
    c = swin_case
    _skip_unless_runnable(impl, device)
    benchmark.group = f"swin-window-attn {c.name} {mode}"
    fn = window_impl(impl, c, device)
    C3 = 3 * c.channels
    train = mode == "fwd+bwd"

    def make():
        q = torch.randn(c.batch, c.H, c.W, C3, device=device, dtype=DTYPE, requires_grad=train)
        t = (0.02 * torch.randn((2 * c.window - 1) ** 2, c.heads, device=device, dtype=DTYPE)).requires_grad_(train)
        b = (0.02 * torch.randn(C3, device=device, dtype=DTYPE)).requires_grad_(train)
        return q, t, b

    inputs = [make() for _ in range(2 if device.type == "cpu" else 3)]
    grad_out = torch.randn(c.batch, c.H, c.W, c.channels, device=device, dtype=DTYPE)

    def step(q, t, b):
        if not train:
            with torch.no_grad():
                return fn(q, t, b)
        out = fn(q, t, b)
        return torch.autograd.grad(out, (q, t, b), grad_out, allow_unused=True)

    run_timed(benchmark, step, inputs, device)
    elt = torch.finfo(DTYPE).bits // 8
    tokens = c.batch * c.H * c.W
    nbytes = tokens * 4 * c.channels * elt + (tokens * 8 * c.channels * elt if train else 0)
    Hp, Wp = -(-c.H // c.window) * c.window, -(-c.W // c.window) * c.window
    flops = 4 * c.batch * Hp * Wp * c.window**2 * c.channels * (3.5 if train else 1.0)
    _record(benchmark, copy_bandwidth, c.name, impl, mode, nbytes, flops,
            dict(B=c.batch, H=c.H, W=c.W, heads=c.heads, head_dim=c.head_dim, window=c.window, shift=c.shift))


GLOBAL_IMPLS = ("reference", "reference+compile", "triton", "cuda", "cpp")


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", GLOBAL_IMPLS)
def test_global_attention(benchmark, device, copy_bandwidth, global_case, impl, mode):
    c = global_case
    _skip_unless_runnable(impl, device)
    benchmark.group = f"global-attn {c.name} {mode}"
    train = mode == "fwd+bwd"
    backend = impl.split("+")[0]

    def op(q):
        return fastwin.ops.attention(q, c.heads)

    compiled = torch.compile(op) if impl.endswith("+compile") else op

    def step(q):
        with fastwin.set_backend(backend, strict=backend != "reference"):
            if not train:
                with torch.no_grad():
                    return compiled(q)
            out = compiled(q)
            return torch.autograd.grad(out, q, torch.ones_like(out))

    C3 = 3 * c.heads * c.head_dim
    inputs = [(torch.randn(c.batch, c.tokens, C3, device=device, dtype=DTYPE, requires_grad=train),)
              for _ in range(2)]
    run_timed(benchmark, step, inputs, device)
    elt = torch.finfo(DTYPE).bits // 8
    nbytes = c.batch * c.tokens * (4 if not train else 12) * c.heads * c.head_dim * elt
    flops = 4 * c.batch * c.heads * c.tokens**2 * c.head_dim * (3.5 if train else 1.0)
    _record(benchmark, copy_bandwidth, c.name, impl, mode, nbytes, flops,
            dict(B=c.batch, N=c.tokens, heads=c.heads, head_dim=c.head_dim))


CONV_IMPLS = ("reference", "reference+compile", "cudnn-nchw", "cudnn-channels_last", "triton", "cuda", "cpp")


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", CONV_IMPLS)
def test_dwconv(benchmark, device, copy_bandwidth, conv_case, impl, mode):
    c = conv_case
    if impl.startswith("cudnn"):
        if device.type != "cuda":
            pytest.skip("cuDNN baselines need a GPU")
        backend, channels_last = "reference", impl.endswith("channels_last")
    else:
        _skip_unless_runnable(impl, device)
        backend, channels_last = impl.split("+")[0], device.type == "cuda"
    benchmark.group = f"dwconv {c.name} {mode}"
    train = mode == "fwd+bwd"

    def op(x, w, b):
        return fastwin.ops.dwconv2d(x, w, b, residual=c.residual)

    compiled = torch.compile(op) if impl.endswith("+compile") else op

    def step(x, w, b):
        with fastwin.set_backend(backend, strict=backend != "reference"):
            if not train:
                with torch.no_grad():
                    return compiled(x, w, b)
            out = compiled(x, w, b)
            return torch.autograd.grad(out, (x, w, b), torch.ones_like(out))

    def make():
        x = torch.randn(c.batch, c.channels, c.H, c.W, device=device, dtype=DTYPE)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        w = 0.1 * torch.randn(c.channels, 1, c.kernel, c.kernel, device=device, dtype=DTYPE)
        b = torch.randn(c.channels, device=device, dtype=DTYPE)
        return tuple(t.requires_grad_(train) for t in (x, w, b))

    run_timed(benchmark, step, [make() for _ in range(2)], device)
    elt = torch.finfo(DTYPE).bits // 8
    numel = c.batch * c.channels * c.H * c.W
    nbytes = numel * elt * (2 if not train else 5)
    flops = 2 * numel * c.kernel**2 * (3 if train else 1)
    _record(benchmark, copy_bandwidth, c.name, impl, mode, nbytes, flops,
            dict(B=c.batch, C=c.channels, H=c.H, W=c.W, k=c.kernel, residual=c.residual,
                 channels_last=channels_last))


DPE_LN_IMPLS = ("reference", "reference+compile", "triton", "cuda", "cpp")


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", DPE_LN_IMPLS)
def test_dwconv_layernorm(benchmark, device, copy_bandwidth, conv_case, impl, mode):
    """UniFormer SABlock entry: position embedding + residual + flatten + LayerNorm (3x3 cases only)."""
    c = conv_case
    if c.kernel != 3 or not c.residual:
        pytest.skip("the fused DPE + LayerNorm exists for the 3x3 position embedding only")
    _skip_unless_runnable(impl, device)
    backend = impl.split("+")[0]
    benchmark.group = f"dpe-layernorm {c.name} {mode}"
    train = mode == "fwd+bwd"

    def op(x, w, b, lw, lb):
        return fastwin.ops.dwconv_layernorm(x, w, b, lw, lb, 1e-6)

    compiled = torch.compile(op) if impl.endswith("+compile") else op

    def step(*args):
        with fastwin.set_backend(backend, strict=backend != "reference"):
            if not train:
                with torch.no_grad():
                    return compiled(*args)
            tokens, normed = compiled(*args)
            return torch.autograd.grad((tokens, normed), args, (torch.ones_like(tokens), torch.ones_like(normed)))

    def make():
        x = torch.randn(c.batch, c.channels, c.H, c.W, device=device, dtype=DTYPE)
        if device.type == "cuda":
            x = x.to(memory_format=torch.channels_last)
        w = 0.1 * torch.randn(c.channels, 1, 3, 3, device=device, dtype=DTYPE)
        rest = [torch.randn(c.channels, device=device, dtype=DTYPE) for _ in range(3)]
        return tuple(t.requires_grad_(train) for t in (x, w, *rest))

    run_timed(benchmark, step, [make() for _ in range(2)], device)
    elt = torch.finfo(DTYPE).bits // 8
    numel = c.batch * c.channels * c.H * c.W
    nbytes = numel * elt * (3 if not train else 8)  # read x, write tokens + normed (+ grads)
    flops = 2 * numel * 9 * (3 if train else 1)
    _record(benchmark, copy_bandwidth, c.name, impl, mode, nbytes, flops,
            dict(B=c.batch, C=c.channels, H=c.H, W=c.W, k=3))
