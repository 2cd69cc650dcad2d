"""Interleaved timing of every implementation of one benchmark case, inside pytest-benchmark.

One pytest test = one case (shape, mode). All its implementations (fastwin backends and the
baselines) are built first and warmed up (compilation, autotuning). Then, for `rounds` rounds, each
implementation gives one sample per round. pytest-benchmark times the case's *primary*
implementation (the first fastwin backend that runs here) with `pedantic`; the others run in its
`teardown`, in an order rotated per round, and are timed the same way (wall clock around a sample of
back-to-back calls ending with a device synchronize), so every round holds one sample of each, taken
within seconds of each other. Speedups are ratios of the median times with the range of the
per-round ratios, "no difference" where that range straddles 1.0 (`extra_info`); at the end of the
run `conftest.py` adds a JSON row per implementation and prints
the compact summary.
"""
from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

from fastwin.bench import ratio_spread, verdict

# Baselines: what users would otherwise run. `speedup_vs_<name>` is recorded for each one present.
#   reference          fastwin's pure-PyTorch path; for window attention this is the SDPA-with-a-dense-
#                      float-mask path (bias + shift mask as attn_mask: timm's `fused_attn` path)
#   reference+compile  torch.compile of the reference
#   official_matmul    the official Swin code: explicit (q*scale) @ k^T + bias + mask, softmax, @ v
#   flex               FlexAttention with bias and shift mask in a score_mod (CUDA)
#   cudnn-*            torch's depthwise conv (cuDNN), NCHW and channels-last (CUDA)
#   timm, timm+compile the timm model of the same architecture (when timm is importable)
BASELINES = ("reference", "reference+compile", "official_matmul", "flex", "cudnn-nchw", "cudnn-channels_last",
             "timm", "timm+compile", "onnxruntime", "openvino")
# The implementation pytest-benchmark itself times: the first of these that runs in the case.
PRIMARY_ORDER = ("triton", "cuda", "cpp", "auto", "reference")
# Short column names of the summary table.
SHORT = {"reference": "ref", "reference+compile": "ref+compile", "official_matmul": "official",
         "cudnn-channels_last": "cudnn-cl", "cudnn-nchw": "cudnn-nchw"}


def size_set(config) -> str:
    return config.getoption("--size-set") or ("full" if torch.cuda.is_available() else "small")


def timing(device: torch.device, kind: str) -> dict:
    """Case.run settings: interleaved rounds, sample length, warm-up calls ("kernel" or "model").

    A CPU sample of >= 40 ms spans several scheduler slices, so one preempted call on a shared
    2-core machine moves a sample by a few percent instead of several-fold.
    """
    if device.type == "cuda":
        return dict(rounds=20, min_sample_s=0.01, warmup=3) if kind == "kernel" else \
            dict(rounds=10, min_sample_s=0.0, warmup=2)
    return dict(rounds=11, min_sample_s=0.04, warmup=2) if kind == "kernel" else \
        dict(rounds=5, min_sample_s=0.0, warmup=1)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Case:
    """Implementations of one case: `add(name, build)` each, then `run(benchmark, ...)`, `record(...)`.

    `step(i)` runs one call on the i-th input set (rotate with `i % len(inputs)`). An implementation
    whose construction or warm-up raises is recorded in `errors` and left out of the rounds.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.steps: Dict[str, Callable[[int], object]] = {}
        self.errors: Dict[str, str] = {}
        self.times: Dict[str, List[float]] = {}
        self.inner: Dict[str, int] = {}

    def add(self, name: str, build: Callable[[], Callable[[int], object]]) -> None:
        """Register `name`; `build()` returns its step (raising `Skip` to leave it out with a reason)."""
        try:
            self.steps[name] = build()
        except Skip as exc:
            self.errors[name] = f"skipped: {exc}"
        except Exception as exc:  # a baseline that cannot be built is reported, not fatal
            self.errors[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]

    def _warm(self, warmup: int, min_sample_s: float) -> List[str]:
        """Warm every implementation up; choose its calls per sample; return those that ran."""
        live = []
        for name, step in self.steps.items():
            try:
                for i in range(max(warmup, 1)):
                    step(i)
                _sync(self.device)
                t0 = time.perf_counter()
                step(warmup)
                _sync(self.device)
                one = time.perf_counter() - t0
                self.inner[name] = max(1, min(1000, math.ceil(min_sample_s / max(one, 1e-7))))
                live.append(name)
            except Exception as exc:
                self.errors[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return live

    def run(self, benchmark, rounds: int, warmup: int = 2, min_sample_s: float = 0.0) -> Optional[str]:
        """Warm up, then interleaved rounds; returns the primary implementation (None if nothing ran).

        A round is one sample of the primary (pytest-benchmark's `pedantic` with `iterations` calls)
        followed, in its `teardown`, by one sample of every other implementation in an order rotated
        per round. A sample is `inner[name]` back-to-back calls (about `min_sample_s` long) on rotating
        inputs, timed by the wall clock with one device synchronize at its end, as pedantic times.
        """
        live = self._warm(warmup, min_sample_s)
        primary = next((p for p in PRIMARY_ORDER if p in live), live[0] if live else None)
        if primary is None:
            return None
        device, steps = self.device, self.steps
        others = [n for n in live if n != primary]
        self.times = {name: [] for name in others}
        state = {"round": 0, "i": 0}
        n_primary = self.inner[primary]

        def target():  # one call; the last call of a sample waits for the device
            i = state["i"]
            state["i"] += 1
            steps[primary](i)
            if state["i"] % n_primary == 0:
                _sync(device)

        def teardown():
            k = state["round"] % max(len(others), 1)
            for name in others[k:] + others[:k]:
                n = self.inner[name]
                _sync(device)
                t0 = time.perf_counter()
                for j in range(n):
                    steps[name](state["i"] + j)
                _sync(device)
                self.times[name].append((time.perf_counter() - t0) / n)
            state["round"] += 1
            state["i"] = n_primary * state["round"]  # the primary's samples stay aligned to `inner`

        _sync(device)
        benchmark.pedantic(target, teardown=teardown, rounds=rounds, iterations=n_primary, warmup_rounds=0)
        self.times = {name: times[:rounds] for name, times in self.times.items()}  # pedantic's extra call
        self.times[primary] = list(benchmark.stats.stats.data)
        return primary

    def record(self, benchmark, primary: Optional[str], **info) -> None:
        """Per-implementation stats and per-round speedups into `benchmark.extra_info`."""
        impls = {}
        for name, times in self.times.items():
            impls[name] = {"median": statistics.median(times), "min": min(times), "max": max(times),
                           "times": [round(t, 9) for t in times]}
        benchmark.extra_info.update(info, impl=primary, impls=impls, errors=dict(self.errors),
                                    rounds=len(self.times.get(primary, [])), calls_per_sample=dict(self.inner))
        if primary is not None:
            benchmark.extra_info.update(speedups(self.times, primary))


class Skip(Exception):
    """An implementation that does not exist here (no GPU, timm not installed ...)."""


def speedups(times: Dict[str, List[float]], impl: str) -> dict:
    """speedup_vs_<baseline> (ratio of medians), its per-round [min, max] and verdict ("faster", "slower"
    or "no difference": `fastwin.bench.ratio_spread` / `verdict`, the one definition) per baseline."""
    out = {}
    for base in BASELINES:
        if base in times and base != impl:
            s = ratio_spread(times[base], times[impl])
            if s[1] == s[1]:
                out[f"speedup_vs_{base}"] = round(s[1], 3)
                out[f"speedup_vs_{base}_spread"] = [round(s[0], 3), round(s[2], 3)]
                out[f"speedup_vs_{base}_verdict"] = verdict(s)
    return out


def environment_info(device):
    info = {"torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.date.today().isoformat(), "device": "cpu", "threads": torch.get_num_threads(),
            "cores": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    try:
        from timm_shim import import_timm, stubbed_packages

        timm = import_timm()
        if timm is not None:
            info["timm"] = timm.__version__
            if stubbed_packages():
                info["timm_stubbed_imports"] = stubbed_packages()
    except Exception:  # noqa: BLE001 - the environment record must not fail the run
        pass
    if device.type == "cuda":
        info["device"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["device"] = f"{cpu_name()} ({os.cpu_count()} cores)"
        info["cpu_isa"] = torch.backends.cpu.get_cpu_capability()
    return info


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
