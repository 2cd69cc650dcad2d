"""Model benchmarks: inference and training-step time (img/s) and peak memory per implementation.

One test per (model, batch, size, mode); in the same interleaved rounds (harness.Case): the
reference eager path, torch.compile of it, `auto` (what users get by default), each fast backend of
the device, and timm's model of the same architecture, eager and compiled, when timm is importable
(benchmarks/timm_shim.py lets it import without torchvision). Whole-model torch.compile baselines
are timed for inference; on CPU they are opt-in (`--model-compile`): inductor needs minutes per model
on 2 cores, which alone would exceed the suite's time budget (the kernel suite measures torch.compile
on every CPU run). Compiled training steps are left out everywhere (compile time).
"""
from __future__ import annotations

import statistics

import pytest
import torch
from harness import Case, Skip, size_set
from shapes import MODELS_FULL, MODELS_SMALL
from timm_shim import import_timm

import fastwin
from fastwin.bench import model_step, peak_memory

DTYPE = torch.bfloat16 if torch.cuda.is_available() else torch.float32
IMPLS = ("reference", "reference+compile", "auto", "triton", "cuda", "cpp", "timm", "timm+compile")


def pytest_generate_tests(metafunc):
    if "model_case" in metafunc.fixturenames:
        cases = MODELS_SMALL if size_set(metafunc.config) == "small" else MODELS_FULL
        metafunc.parametrize("model_case", cases, ids=lambda c: f"{c[0]}-b{c[1]}-{c[2]}px-{c[3]}")


def _module(impl, name, img, train, device, compile_models):
    """(module, fastwin backend) for `impl`; raises Skip when it does not exist here."""
    backend = impl.split("+")[0]
    if impl.endswith("+compile") and not compile_models:
        raise Skip("whole-model torch.compile is opt-in on CPU (--model-compile): minutes per model on 2 cores")
    if impl.endswith("+compile") and train:
        raise Skip("torch.compile of whole training steps is left out: its compile time alone exceeds a GPU bench "
                   "step's 10 minutes (SPEC §8 compares training with the eager reference)")
    if backend == "timm":
        timm = import_timm()
        if timm is None:
            raise Skip("timm is not installed")
        if name not in timm.list_models():
            raise Skip(f"timm has no {name}")
        return timm.create_model(name, img_size=img).to(device).train(train), "reference"
    if backend in ("triton", "cuda", "cpp"):
        table = fastwin.backends()
        if not table[backend]:
            raise Skip(f"{backend}: {table.reasons[backend]}")
        if (backend == "cpp") != (device.type == "cpu") or (backend == "triton" and device.type == "cpu"):
            raise Skip(f"{backend} is not a {device.type} backend")
    return fastwin.create_model(name, img_size=img).to(device).train(train), backend


def test_model(benchmark, device, model_case, timing_for, request):
    name, batch, img, mode = model_case
    train = mode == "train"
    compile_models = device.type == "cuda" or request.config.getoption("--model-compile")
    benchmark.group = f"model {name} b{batch} {img}px {mode}"
    images = [torch.randn(batch, 3, img, img, device=device) for _ in range(2)]
    case = Case(device)
    peaks = {}
    for impl in IMPLS:
        def build(impl=impl):
            module, backend = _module(impl, name, img, train, device, compile_models)
            runner = torch.compile(module) if impl.endswith("+compile") else module
            inner = model_step(runner, images, train, DTYPE)

            def step(i):
                with fastwin.set_backend(backend):
                    inner(i)

            if device.type == "cuda":  # peak memory of one (first, compiling) step, outside the timing
                with peak_memory(device) as mem:
                    step(0)
                peaks[impl] = mem["bytes"]
            return step

        case.add(impl, build)
    primary = case.run(benchmark, **timing_for("model"))
    if primary is None:
        pytest.skip(f"no implementation ran: {case.errors}")
    median = statistics.median(case.times[primary])
    case.record(benchmark, primary, case=f"{name} b{batch} {img}px {mode}", mode=mode, dtype=str(DTYPE)[6:],
                batch=batch, images_per_s=round(batch / median, 1),
                peak_memory_MiB={k: (None if v is None else round(v / 2**20)) for k, v in peaks.items()})
