"""Timing and environment helpers for the benchmark suites (imported by conftest and the tests)."""
from __future__ import annotations

import datetime
import os
import platform

import torch

BASELINES = ("reference", "reference+compile", "official_matmul", "flex", "cudnn-nchw", "cudnn-channels_last")


def size_set(config) -> str:
    return config.getoption("--size-set") or ("full" if torch.cuda.is_available() else "small")


def run_timed(benchmark, fn, inputs, device, rounds=None, warmup=2):
    """Benchmark fn(*inputs[i % len(inputs)]) with synchronization, rotating the input sets."""
    counter = {"i": 0}

    def step():
        args = inputs[counter["i"] % len(inputs)]
        counter["i"] += 1
        out = fn(*args)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    rounds = rounds or (20 if device.type == "cuda" else 3)
    return benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=warmup)


def environment_info(device):
    info = {"torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.date.today().isoformat(), "device": "cpu"}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["device"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["device"] = f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
    return info
