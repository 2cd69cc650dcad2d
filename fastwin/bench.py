"""Timing helpers shared by `fastwin bench` and the pytest-benchmark suites in benchmarks/.

GPU timings synchronize and use CUDA events; every measurement warms up first (compilation,
autotuning, allocator) and rotates through several input buffers so caches don't flatter small shapes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import statistics
import sys
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

from . import dispatch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[int], object], device: torch.device, warmup: int = 2, iters: int = 5,
            min_time: float = 0.0) -> List[float]:
    """Seconds per call of `fn(i)` (i rotates inputs), after `warmup` untimed calls."""
    for i in range(warmup):
        fn(i)
    synchronize(device)
    times = []
    i = 0
    start_all = time.perf_counter()
    while i < iters or (time.perf_counter() - start_all) < min_time:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(i)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - t0)
        i += 1
    return times


@contextlib.contextmanager
def peak_memory(device: torch.device):
    """Yields a dict whose "bytes" is the peak allocated memory inside the block (CUDA only; else None)."""
    out = {"bytes": None}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield out
        torch.cuda.synchronize(device)
        out["bytes"] = torch.cuda.max_memory_allocated(device) - base
    else:
        yield out


@dataclasses.dataclass
class Result:
    name: str           # "reference", "reference+compile", "cpp", ...
    seconds: float      # median seconds per step
    images_per_s: float
    peak_bytes: Optional[int] = None
    error: Optional[str] = None


class Progress:
    """A dependency-free progress line (uses tqdm when installed)."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.enabled = enabled
        self.total, self.n, self.desc = total, 0, desc
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr)
        except ImportError:
            self._bar = None
            self._draw("")

    def _draw(self, what):
        if self.enabled:
            width = 24
            filled = int(width * self.n / max(self.total, 1))
            sys.stderr.write(f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] {self.n}/{self.total} {what:<40}")
            sys.stderr.flush()

    def update(self, what: str = ""):
        self.n += 1
        if self._bar is not None:
            self._bar.set_postfix_str(what)
            self._bar.update(1)
        else:
            self._draw(what)

    def close(self):
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            sys.stderr.write("\n")


def model_step(model: torch.nn.Module, images: Sequence[torch.Tensor], train: bool, dtype: torch.dtype):
    """A closure running one inference or training step on `images[i % len(images)]`."""
    device = images[0].device
    amp = dtype in (torch.float16, torch.bfloat16)
    if train:
        opt = torch.optim.SGD(model.parameters(), lr=1e-6)

        def step(i):
            with torch.autocast(device.type, dtype=dtype, enabled=amp):
                loss = model(images[i % len(images)]).float().logsumexp(-1).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:

        def step(i):
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=amp):
                model(images[i % len(images)])

    return step


def candidates(device: torch.device, compile_reference: bool = True) -> List[str]:
    """What to compare on `device`: the reference, optionally compiled, then every fast backend there."""
    names = ["reference"]
    if compile_reference:
        names.append("reference+compile")
    table = dispatch.backends()
    for name in dispatch.auto_order(device.type, "shifted_window_attention"):
        if name != "reference" and table[name]:
            names.append(name)
    return names


def bench_model(model_name: str, batch: int, dtype: torch.dtype, train: bool, device: torch.device,
                img_size: Optional[int] = None, names: Optional[Iterable[str]] = None, iters: int = 5,
                warmup: int = 2, progress: bool = True) -> List[Result]:
    """img/s (and peak memory on CUDA) of one model under each backend in `names`."""
    from .models import create_model

    kwargs = {} if img_size is None else {"img_size": img_size}
    model = create_model(model_name, **kwargs).to(device)
    model.train(train)
    size = img_size or getattr(model, "img_size", 224)
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    images = [torch.randn(batch, 3, *size, device=device) for _ in range(3)]  # rotated inputs
    names = list(names or candidates(device))
    bar = Progress(len(names), f"{model_name} b{batch} {'train' if train else 'infer'}", progress)
    results = []
    for name in names:
        backend, compiled = name.split("+")[0], name.endswith("+compile")
        try:
            with dispatch.set_backend(backend):
                runner = torch.compile(model) if compiled else model
                step = model_step(runner, images, train, dtype)
                with peak_memory(device) as mem:
                    times = time_fn(step, device, warmup=warmup, iters=iters)
            sec = statistics.median(times)
            results.append(Result(name, sec, batch / sec, mem["bytes"]))
        except Exception as exc:  # report, keep benchmarking the others
            results.append(Result(name, float("nan"), float("nan"), error=f"{type(exc).__name__}: {exc}"[:200]))
        bar.update(name)
    bar.close()
    return results


def format_table(results: List[Result], title: str) -> str:
    base = next((r for r in results if r.name == "reference" and r.error is None), None)
    rows = [("backend", "ms/step", "img/s", "vs reference", "peak MiB")]
    for r in results:
        if r.error:
            rows.append((r.name, "failed", r.error, "", ""))
            continue
        speed = f"{base.seconds / r.seconds:.2f}x" if base else "-"
        mem = f"{r.peak_bytes / 2**20:.0f}" if r.peak_bytes is not None else "-"
        rows.append((r.name, f"{r.seconds * 1e3:.1f}", f"{r.images_per_s:.1f}", speed, mem))
    widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
    lines = [title, "  ".join(str(c).ljust(w) for c, w in zip(rows[0], widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows[1:]]
    return "\n".join(lines)


def plot(results: Dict[str, List[Result]], path: str) -> None:
    """Bar chart of speedup over the reference per case and backend (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'fastwin[plot]'") from exc
    cases = list(results)
    names = sorted({r.name for rs in results.values() for r in rs if r.error is None},
                   key=lambda n: (n != "reference", n))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(cases) * max(len(names), 1) / 2), 4))
    width = 0.8 / max(len(names), 1)
    for j, name in enumerate(names):
        ys = []
        for case in cases:
            base = next((r for r in results[case] if r.name == "reference" and r.error is None), None)
            r = next((r for r in results[case] if r.name == name and r.error is None), None)
            ys.append(base.seconds / r.seconds if base and r else 0.0)
        xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(cases))]
        bars = ax.bar(xs, ys, width, label=name)
        ax.bar_label(bars, fmt="%.2fx", fontsize=8)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(cases)), cases)
    ax.set_ylabel("speedup over reference eager (higher is better)")
    ax.set_title("fastwin: throughput relative to the pure-PyTorch reference")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
