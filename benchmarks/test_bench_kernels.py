"""Kernel benchmarks: shifted-window attention at Swin stage shapes, global attention, depthwise conv.

One test per case (shape, mode); every implementation of the case runs in the same interleaved
rounds (harness.Case). Each result's extra_info: case, the primary impl, shapes, dtype, minimal bytes
(read q/k/v once, write the output once), achieved GB/s and % of the measured copy bandwidth,
FLOP/s, per-implementation medians and per-round times, and `speedup_vs_<baseline>` (median of the
per-round ratios) with its `[min, max]`.
"""
from __future__ import annotations

import statistics

import pytest
import torch
from baselines import flex_available, window_impl
from harness import Case, Skip, size_set
from shapes import conv_cases, global_cases, swin_cases

import fastwin
from fastwin.dispatch import BACKENDS

DTYPE = torch.bfloat16 if torch.cuda.is_available() else torch.float32
WINDOW_IMPLS = ("reference", "reference+compile", "official_matmul", "flex", "triton", "cuda", "cpp")
GLOBAL_IMPLS = ("reference", "reference+compile", "triton", "cuda", "cpp")
CONV_IMPLS = ("reference", "reference+compile", "cudnn-nchw", "cudnn-channels_last", "triton", "cuda", "cpp")
DPE_LN_IMPLS = ("reference", "reference+compile", "triton", "cuda", "cpp")
FAST = tuple(name for name in BACKENDS if name != "reference")


def pytest_generate_tests(metafunc):
    sizes = size_set(metafunc.config)
    if "swin_case" in metafunc.fixturenames:
        metafunc.parametrize("swin_case", swin_cases(sizes), ids=lambda c: c.name)
    if "global_case" in metafunc.fixturenames:
        metafunc.parametrize("global_case", global_cases(sizes), ids=lambda c: c.name)
    if "conv_case" in metafunc.fixturenames:
        metafunc.parametrize("conv_case", conv_cases(sizes), ids=lambda c: c.name)


def runnable(impl, device) -> None:
    """Raise Skip when `impl` does not run on `device` (with the reason)."""
    if impl == "flex":
        reason = flex_available(device)
        if reason:
            raise Skip(reason)
    if impl.startswith("cudnn") and device.type != "cuda":
        raise Skip("cuDNN baselines need a GPU")
    backend = impl.split("+")[0]
    if backend in FAST:
        table = fastwin.backends()
        if not table[backend]:
            raise Skip(f"{backend}: {table.reasons[backend]}")
        if backend == "triton" and device.type == "cpu":
            raise Skip("triton on CPU is the interpreter (a correctness tool, not a benchmark)")
        if backend == "cpp" and device.type == "cuda":
            raise Skip("cpp is the CPU backend")
        if backend == "cuda" and device.type == "cpu":
            raise Skip("cuda needs a GPU")


def _backend_ctx(backend):
    return fastwin.set_backend(backend, strict=backend != "reference")


def _finish(benchmark, case, copy_bw, name, mode, nbytes, flops, shapes, settings):
    primary = case.run(benchmark, **settings)
    if primary is None:
        pytest.skip(f"no implementation ran: {case.errors}")
    median = statistics.median(case.times[primary])
    gbs = nbytes / median / 1e9
    case.record(benchmark, primary, case=f"{name} {mode}", mode=mode, dtype=str(DTYPE)[6:], shapes=shapes,
                min_bytes=nbytes, achieved_GBps=round(gbs, 2), pct_of_copy_bw=round(100 * gbs / copy_bw, 1),
                copy_bw_GBps=round(copy_bw, 1), TFLOPs=round(flops / median / 1e12, 3), flops=flops)


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_shifted_window_attention(benchmark, device, copy_bandwidth, timing_for, swin_case, mode):
    c = swin_case
    benchmark.group = f"swin-window-attn {c.name} {mode}"
    C3 = 3 * c.channels
    train = mode == "fwd+bwd"

    def make():
        q = torch.randn(c.batch, c.H, c.W, C3, device=device, dtype=DTYPE, requires_grad=train)
        t = (0.02 * torch.randn((2 * c.window - 1) ** 2, c.heads, device=device, dtype=DTYPE)).requires_grad_(train)
        b = (0.02 * torch.randn(C3, device=device, dtype=DTYPE)).requires_grad_(train)
        return q, t, b

    inputs = [make() for _ in range(2 if device.type == "cpu" else 3)]
    grad_out = torch.randn(c.batch, c.H, c.W, c.channels, device=device, dtype=DTYPE)
    case = Case(device)
    for impl in WINDOW_IMPLS:
        def build(impl=impl):
            runnable(impl, device)
            fn = window_impl(impl, c, device)

            def step(i):
                q, t, b = inputs[i % len(inputs)]
                if not train:
                    with torch.no_grad():
                        return fn(q, t, b)
                return torch.autograd.grad(fn(q, t, b), (q, t, b), grad_out, allow_unused=True)

            return step

        case.add(impl, build)
    elt = torch.finfo(DTYPE).bits // 8
    tokens = c.batch * c.H * c.W
    nbytes = tokens * 4 * c.channels * elt + (tokens * 8 * c.channels * elt if train else 0)
    Hp, Wp = -(-c.H // c.window) * c.window, -(-c.W // c.window) * c.window
    flops = 4 * c.batch * Hp * Wp * c.window**2 * c.channels * (3.5 if train else 1.0)
    _finish(benchmark, case, copy_bandwidth, c.name, mode, nbytes, flops,
            dict(B=c.batch, H=c.H, W=c.W, heads=c.heads, head_dim=c.head_dim, window=c.window, shift=c.shift),
            timing_for("kernel"))


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_global_attention(benchmark, device, copy_bandwidth, timing_for, global_case, mode):
    c = global_case
    benchmark.group = f"global-attn {c.name} {mode}"
    train = mode == "fwd+bwd"
    C3 = 3 * c.heads * c.head_dim
    inputs = [torch.randn(c.batch, c.tokens, C3, device=device, dtype=DTYPE, requires_grad=train) for _ in range(2)]
    grad_out = torch.randn(c.batch, c.tokens, C3 // 3, device=device, dtype=DTYPE)
    case = Case(device)
    for impl in GLOBAL_IMPLS:
        def build(impl=impl):
            runnable(impl, device)
            backend = impl.split("+")[0]

            def op(q):
                return fastwin.ops.attention(q, c.heads)

            fn = torch.compile(op) if impl.endswith("+compile") else op

            def step(i):
                q = inputs[i % len(inputs)]
                with _backend_ctx(backend):
                    if not train:
                        with torch.no_grad():
                            return fn(q)
                    return torch.autograd.grad(fn(q), q, grad_out)

            return step

        case.add(impl, build)
    elt = torch.finfo(DTYPE).bits // 8
    nbytes = c.batch * c.tokens * (4 if not train else 12) * c.heads * c.head_dim * elt
    flops = 4 * c.batch * c.heads * c.tokens**2 * c.head_dim * (3.5 if train else 1.0)
    _finish(benchmark, case, copy_bandwidth, c.name, mode, nbytes, flops,
            dict(B=c.batch, N=c.tokens, heads=c.heads, head_dim=c.head_dim), timing_for("kernel"))


def _conv_inputs(c, device, channels_last, train, n_extra=0, kernel=None):
    def make():
        x = torch.randn(c.batch, c.channels, c.H, c.W, device=device, dtype=DTYPE)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        k = kernel or c.kernel
        w = 0.1 * torch.randn(c.channels, 1, k, k, device=device, dtype=DTYPE)
        rest = [torch.randn(c.channels, device=device, dtype=DTYPE) for _ in range(1 + n_extra)]
        return tuple(t.requires_grad_(train) for t in (x, w, *rest))

    return [make() for _ in range(2)]


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_dwconv(benchmark, device, copy_bandwidth, timing_for, conv_case, mode):
    c = conv_case
    benchmark.group = f"dwconv {c.name} {mode}"
    train = mode == "fwd+bwd"
    layouts = {cl: _conv_inputs(c, device, cl, train) for cl in (False, True)}
    case = Case(device)
    for impl in CONV_IMPLS:
        def build(impl=impl):
            runnable(impl, device)
            if impl.startswith("cudnn"):
                backend, channels_last = "reference", impl.endswith("channels_last")
            else:
                backend, channels_last = impl.split("+")[0], device.type == "cuda"
            inputs = layouts[channels_last]

            def op(x, w, b):
                return fastwin.ops.dwconv2d(x, w, b, residual=c.residual)

            fn = torch.compile(op) if impl.endswith("+compile") else op

            def step(i):
                args = inputs[i % len(inputs)]
                with _backend_ctx(backend):
                    if not train:
                        with torch.no_grad():
                            return fn(*args)
                    out = fn(*args)
                    return torch.autograd.grad(out, args, torch.ones_like(out))

            return step

        case.add(impl, build)
    elt = torch.finfo(DTYPE).bits // 8
    numel = c.batch * c.channels * c.H * c.W
    nbytes = numel * elt * (2 if not train else 5)
    flops = 2 * numel * c.kernel**2 * (3 if train else 1)
    _finish(benchmark, case, copy_bandwidth, c.name, mode, nbytes, flops,
            dict(B=c.batch, C=c.channels, H=c.H, W=c.W, k=c.kernel, residual=c.residual,
                 channels_last=device.type == "cuda"), timing_for("kernel"))


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_dwconv_layernorm(benchmark, device, copy_bandwidth, timing_for, conv_case, mode):
    """UniFormer SABlock entry: position embedding + residual + flatten + LayerNorm (3x3 cases only)."""
    c = conv_case
    if c.kernel != 3 or not c.residual:
        pytest.skip("the fused DPE + LayerNorm exists for the 3x3 position embedding only")
    benchmark.group = f"dpe-layernorm {c.name} {mode}"
    train = mode == "fwd+bwd"
    inputs = _conv_inputs(c, device, device.type == "cuda", train, n_extra=2, kernel=3)
    case = Case(device)
    for impl in DPE_LN_IMPLS:
        def build(impl=impl):
            runnable(impl, device)
            backend = impl.split("+")[0]

            def op(x, w, b, lw, lb):
                return fastwin.ops.dwconv_layernorm(x, w, b, lw, lb, 1e-6)

            fn = torch.compile(op) if impl.endswith("+compile") else op

            def step(i):
                args = inputs[i % len(inputs)]
                with _backend_ctx(backend):
                    if not train:
                        with torch.no_grad():
                            return fn(*args)
                    tokens, normed = fn(*args)
                    return torch.autograd.grad((tokens, normed), args,
                                               (torch.ones_like(tokens), torch.ones_like(normed)))

            return step

        case.add(impl, build)
    elt = torch.finfo(DTYPE).bits // 8
    numel = c.batch * c.channels * c.H * c.W
    nbytes = numel * elt * (3 if not train else 8)  # read x, write tokens + normed (+ grads)
    flops = 2 * numel * 9 * (3 if train else 1)
    _finish(benchmark, case, copy_bandwidth, c.name, mode, nbytes, flops,
            dict(B=c.batch, C=c.channels, H=c.H, W=c.W, k=3), timing_for("kernel"))
