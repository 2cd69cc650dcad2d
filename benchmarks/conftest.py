"""Shared benchmark machinery: size sets, device, measured copy bandwidth, the per-implementation
JSON rows and the compact summary printed last (see harness.py for how cases are timed).

    pytest benchmarks --benchmark-only                       # small shapes on CPU, full on GPU
    pytest benchmarks --benchmark-only --size-set full       # force the full (real-model) shapes
    pytest benchmarks --benchmark-only --model-compile       # CPU: also torch.compile whole models
    pytest benchmarks --benchmark-only --rounds 15           # more interleaved rounds per case
    pytest benchmarks --benchmark-only --benchmark-json out.json --benchmark-group-by group

pytest-benchmark's wide table shows each case's primary implementation; the summary after it shows
every implementation of every case with its median, min-max and per-round speedups.
"""
from __future__ import annotations

import copy
import math
import os
import statistics

import pytest
import torch
from harness import BASELINES, SHORT, environment_info, size_set, timing  # noqa: F401


def pytest_addoption(parser):
    parser.addoption("--size-set", choices=("small", "full"), default=None,
                     help="benchmark shapes: small (CPU default) or full (GPU default)")
    parser.addoption("--model-compile", action="store_true", default=False,
                     help="CPU: also time torch.compile of whole models (minutes of compilation per model)")
    parser.addoption("--rounds", type=int, default=None,
                     help="interleaved rounds per case (default: harness.timing, by device and kind)")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device")


@pytest.fixture(scope="session")
def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="session")
def timing_for(device, request):
    """kind ("kernel" | "model") -> Case.run settings, with --rounds applied."""
    rounds = request.config.getoption("--rounds")

    def settings(kind):
        out = timing(device, kind)
        if rounds:
            out["rounds"] = rounds
        return out

    return settings


@pytest.fixture(scope="session")
def copy_bandwidth(device):
    """Device copy bandwidth in GB/s (read + write bytes per second), measured once per run."""
    n = (256 if device.type == "cuda" else 32) * 2**20  # bytes
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    from fastwin.bench import time_fn

    times = time_fn(lambda i: dst.copy_(src), device, warmup=3, iters=10)
    return 2 * n / min(times) / 1e9


# ------------------------------------------------------------------------------------------ JSON rows

def _stats(times, iterations):
    data = sorted(times)
    n = len(data)
    q1, q3 = (statistics.quantiles(data, n=4)[::2] if n > 1 else (data[0], data[0]))
    mean = statistics.fmean(data)
    return {"min": data[0], "max": data[-1], "mean": mean, "stddev": statistics.stdev(data) if n > 1 else 0.0,
            "rounds": n, "median": statistics.median(data), "iqr": q3 - q1, "q1": q1, "q3": q3,
            "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0", "ld15iqr": data[0], "hd15iqr": data[-1],
            "ops": 1.0 / mean if mean > 0 else math.inf, "total": sum(data) * iterations, "data": list(times),
            "iterations": iterations}


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """One row per (case, implementation): the primary's own row plus a row for each other one.

    The other rows hold the same interleaved rounds' samples (`extra_info.impls`), with their own
    `speedup_vs_<baseline>` (ratio of medians), `_spread` (per-round [min, max]) and `_verdict`.
    """
    from harness import speedups

    rows = []
    for b in output_json["benchmarks"]:
        rows.append(b)
        info = b.get("extra_info", {})
        impls, primary = info.get("impls"), info.get("impl")
        if not impls or primary is None:
            continue
        times = {name: v["times"] for name, v in impls.items()}
        for name, v in impls.items():
            if name == primary:
                continue
            row = copy.deepcopy({k: val for k, val in b.items() if k not in ("stats", "extra_info")})
            row["name"] = f"{b['name']}::{name}"
            row["fullname"] = f"{b['fullname']}::{name}"
            row["stats"] = _stats(v["times"], info.get("calls_per_sample", {}).get(name, 1))
            extra = {k: val for k, val in info.items()
                     if k not in ("impls", "errors", "impl", "images_per_s", "achieved_GBps", "pct_of_copy_bw",
                                  "TFLOPs")
                     and not k.startswith("speedup_vs_")}
            extra.update(impl=name, primary=primary, **speedups(times, name))
            med = row["stats"]["median"]
            if "min_bytes" in info:
                gbs = info["min_bytes"] / med / 1e9
                extra.update(achieved_GBps=round(gbs, 2), pct_of_copy_bw=round(100 * gbs / info["copy_bw_GBps"], 1))
            if "flops" in info:
                extra["TFLOPs"] = round(info["flops"] / med / 1e12, 3)
            if "batch" in info:
                extra["images_per_s"] = round(info["batch"] / med, 1)
            row["extra_info"] = extra
            rows.append(row)
    output_json["benchmarks"] = rows
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    output_json["fastwin_environment"] = environment_info(dev)


# ------------------------------------------------------------------------------------- the summary

def _ms(t):
    ms = t * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _cell(s):
    from fastwin.bench import format_spread

    return format_spread(s, times="", dash="-")


def summary_lines(entries):
    """The compact table: entries are (group, extra_info) of each case's primary result."""
    from fastwin.bench import ratio_spread as spread

    lines = []
    for group, info in entries:
        times = {name: v["times"] for name, v in info["impls"].items()}
        primary = info["impl"]
        bases = [b for b in BASELINES if b in times]
        lines.append("")
        lines.append(f"{group}  ({info.get('rounds', '?')} rounds)")
        header = ["  impl", "median ms", "min-max ms"] + [f"vs {SHORT.get(b, b)}" for b in bases]
        rows = [header]
        order = [n for n in times if n in BASELINES] + [n for n in times if n not in BASELINES]
        for name in order:
            t = times[name]
            rows.append([f"  {name}{' *' if name == primary else ''}", _ms(statistics.median(t)),
                         f"{_ms(min(t))}-{_ms(max(t))}"]
                        + ["" if b == name else _cell(spread(times[b], t)) for b in bases])
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for r in rows:
            lines.append("  ".join(c.rjust(w) if 0 < i < 3 else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        failed = {k: v for k, v in info.get("errors", {}).items() if not v.startswith("skipped")}
        skipped = [k for k, v in info.get("errors", {}).items() if v.startswith("skipped")]
        for k, v in failed.items():
            lines.append(f"  FAILED {k}: {v}")
        if skipped:
            lines.append(f"  not run here: {', '.join(skipped)} (reasons in the JSON's extra_info.errors)")
    return lines


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Printed after pytest-benchmark's wide table: every implementation, median, spread, speedups."""
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    entries = [(b.group or b.name, b.extra_info) for b in session.benchmarks if b.extra_info.get("impls")]
    if not entries:
        return
    terminalreporter.section("fastwin summary: median of interleaved rounds; vs X = per-round speedup, "
                             "median (min-max); * = timed by pytest-benchmark")
    load, cores = (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0), os.cpu_count() or 1
    if load > cores:  # other jobs: preempted threads stall every parallel op, wall-time ratios suffer
        terminalreporter.write_line(f"note: load average {load:.1f} on {cores} cores while timing; for figures "
                                    "robust to other jobs: python benchmarks/cpu_report.py --threads 1 --clock cpu")
    for line in summary_lines(sorted(entries, key=lambda e: e[0])):
        terminalreporter.write_line(line)
