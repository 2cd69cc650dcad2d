"""Model benchmarks: inference and training-step img/s and peak memory per backend.

Baselines in the same run: the reference eager path, torch.compile of the reference, and timm's
model (inference, same architecture) when timm is importable.
"""
from __future__ import annotations

import pytest
import torch

import fastwin
from fastwin.bench import model_step, peak_memory
from harness import run_timed, size_set
from shapes import MODELS_FULL, MODELS_SMALL

DTYPE = torch.bfloat16 if torch.cuda.is_available() else torch.float32
IMPLS = ("reference", "reference+compile", "timm", "triton", "cuda", "cpp")


def pytest_generate_tests(metafunc):
    if "model_case" in metafunc.fixturenames:
        cases = MODELS_SMALL if size_set(metafunc.config) == "small" else MODELS_FULL
        metafunc.parametrize("model_case", cases, ids=lambda c: f"{c[0]}-b{c[1]}-{c[2]}px")


def _timm_model(name, img):
    try:
        import timm
    except ImportError:
        pytest.skip("timm is not installed")
    if name.startswith("uniformer"):
        pytest.skip("timm has no UniFormer")
    return timm.create_model(name, img_size=img)


@pytest.mark.parametrize("mode", ["infer", "train"])
@pytest.mark.parametrize("impl", IMPLS)
def test_model(benchmark, device, model_case, impl, mode):
    name, batch, img = model_case
    backend = impl.split("+")[0]
    if backend in ("triton", "cuda", "cpp"):
        table = fastwin.backends()
        if not table[backend]:
            pytest.skip(f"{backend}: {table.reasons[backend]}")
        if (backend == "cpp") != (device.type == "cpu") or (backend == "triton" and device.type == "cpu"):
            pytest.skip(f"{backend} is not a {device.type} backend")
    if device.type == "cpu" and mode == "train" and impl == "reference+compile":
        pytest.skip("compiling a training step on 2 CPU cores takes minutes; measured on GPU")
    benchmark.group = f"model {name} b{batch} {img}px {mode}"
    train = mode == "train"
    if impl == "timm":
        model = _timm_model(name, img)
        backend = "reference"
    else:
        model = fastwin.create_model(name, img_size=img)
    model = model.to(device).train(train)
    runner = torch.compile(model) if impl.endswith("+compile") else model
    images = [torch.randn(batch, 3, img, img, device=device) for _ in range(2)]
    step = model_step(runner, images, train, DTYPE)
    with fastwin.set_backend(backend), peak_memory(device) as mem:
        run_timed(benchmark, lambda i: step(i), [(i,) for i in range(2)], device,
                  rounds=10 if device.type == "cuda" else 2, warmup=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(case=f"{name} b{batch} {img}px {mode}", impl=impl, mode=mode,
                                dtype=str(DTYPE)[6:], images_per_s=round(batch / median, 1),
                                peak_memory_MiB=None if mem["bytes"] is None else round(mem["bytes"] / 2**20))
