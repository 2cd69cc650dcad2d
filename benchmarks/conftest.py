"""Shared benchmark machinery: size sets, device, measured copy bandwidth, timing with sync and
rotated inputs, and speedups over every baseline written into each result's `extra_info`.

    pytest benchmarks --benchmark-only                       # small shapes on CPU, full on GPU
    pytest benchmarks --benchmark-only --size-set full       # force the full (real-model) shapes
    pytest benchmarks --benchmark-only --benchmark-json out.json --benchmark-group-by group
"""
from __future__ import annotations

import pytest
import torch

from harness import BASELINES, environment_info, size_set  # noqa: F401


def pytest_addoption(parser):
    parser.addoption("--size-set", choices=("small", "full"), default=None,
                     help="benchmark shapes: small (CPU default) or full (GPU default)")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device")


@pytest.fixture(scope="session")
def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="session")
def copy_bandwidth(device):
    """Device copy bandwidth in GB/s (read + write bytes per second), measured once per run."""
    n = (256 if device.type == "cuda" else 32) * 2**20  # bytes
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    from fastwin.bench import time_fn

    times = time_fn(lambda i: dst.copy_(src), device, warmup=3, iters=10)
    return 2 * n / min(times) / 1e9


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Add speedup_vs_<baseline> to each result, comparing medians within the same case."""
    by_case = {}
    for b in output_json["benchmarks"]:
        case = b.get("extra_info", {}).get("case")
        if case is not None:
            by_case.setdefault(case, {})[b["extra_info"]["impl"]] = b
    for impls in by_case.values():
        for b in impls.values():
            for base in BASELINES:
                if base in impls and base != b["extra_info"]["impl"]:
                    b["extra_info"][f"speedup_vs_{base}"] = round(
                        impls[base]["stats"]["median"] / b["stats"]["median"], 3)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    output_json["fastwin_environment"] = environment_info(dev)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """A compact speedup table (fastest fastwin backend per case vs the reference)."""
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    by_case = {}
    for b in session.benchmarks:
        info = b.extra_info
        if "case" in info:
            by_case.setdefault(info["case"], {})[info["impl"]] = b.stats.median
    if not by_case:
        return
    terminalreporter.section("fastwin speedup over the reference (median, same run)")
    for case, impls in sorted(by_case.items()):
        ref = impls.get("reference")
        cells = [f"{k}={ref / v:.2f}x" for k, v in sorted(impls.items()) if ref and k != "reference"]
        terminalreporter.write_line(f"{case:<48} " + ("  ".join(cells) if cells else "(reference only)"))
