"""Timing for `fastwin bench` and the pytest-benchmark suites in benchmarks/.

Speedups are measured as **interleaved rounds**: every implementation runs once per round, in an
order rotated from round to round, so slow drifts of a shared or throttling machine hit all of them
alike; a speedup is reported as the min / median / max of its per-round ratios, never as a ratio of
two medians taken minutes apart. Each sample repeats the call until it lasts `min_sample_s` (timer
resolution, Python overhead); inputs rotate between calls so caches don't flatter small shapes. GPU
samples are timed with CUDA events after a warm-up (compilation, autotuning, allocator).

Uses only the public API (`fastwin.set_backend`, `fastwin.backends`, `fastwin.create_model`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import statistics
import sys
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .dispatch import BACKENDS  # noqa: F401 (`fastwin bench --backend` choices)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}

# Fast backends that run on each device type (the others are skipped there, not failed).
DEVICE_BACKENDS = {"cuda": ("triton", "cuda"), "cpu": ("cpp",)}
# Everything `fastwin bench --backend` understands; `+compile` is torch.compile of that runner;
# onnxruntime / openvino run the model's ONNX export (CPU inference, fastwin/bench_exported.py).
RUNNERS = ("reference", "reference+compile", "auto", "triton", "cuda", "cpp", "timm", "timm+compile",
           "onnxruntime", "openvino")
EXPORTED = ("onnxruntime", "openvino")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _sample(fn: Callable[[int], object], start: int, inner: int, device: torch.device, clock: str = "wall") -> float:
    """Seconds per call of fn(start), fn(start + 1), ... (`inner` calls).

    clock "wall": elapsed time (CUDA events on a GPU); "cpu": CPU time of this process, which other
    jobs on a shared machine cannot inflate (meaningful with one thread: spinning OpenMP workers
    count too).
    """
    if clock == "cpu":
        t0 = time.process_time()
        for j in range(inner):
            fn(start + j)
        synchronize(device)
        return (time.process_time() - t0) / inner
    if device.type == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for j in range(inner):
            fn(start + j)
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3 / inner
    t0 = time.perf_counter()
    for j in range(inner):
        fn(start + j)
    return (time.perf_counter() - t0) / inner


def time_fn(fn: Callable[[int], object], device: torch.device, warmup: int = 2, iters: int = 5,
            min_time: float = 0.0) -> List[float]:
    """Seconds per call of `fn(i)` (i rotates inputs), after `warmup` untimed calls; one implementation."""
    for i in range(warmup):
        fn(i)
    synchronize(device)
    times, i, t_end = [], 0, time.perf_counter() + min_time
    while i < iters or time.perf_counter() < t_end:
        times.append(_sample(fn, i, 1, device))
        i += 1
    return times


@dataclasses.dataclass
class Measurement:
    """Per-round seconds per call of one implementation (or why it could not run)."""

    name: str
    times: List[float] = dataclasses.field(default_factory=list)
    inner: int = 1
    peak_bytes: Optional[int] = None
    error: Optional[str] = None

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")


def interleaved(steps: Mapping[str, Callable[[int], object]], device: torch.device, rounds: int = 5,
                warmup: int = 1, min_sample_s: float = 0.0, max_inner: int = 1000,
                progress: Optional["Progress"] = None, clock: str = "wall") -> Dict[str, Measurement]:
    """Time every `steps[name](i)` in `rounds` interleaved rounds.

    Each implementation first runs `warmup` untimed calls (on CUDA its peak memory is recorded
    there); one that raises is reported with its error and left out of the rounds. Each round then
    takes one sample of every implementation, in the order rotated by the round number; a sample is
    the mean of `inner` calls, `inner` chosen once per implementation so a sample lasts about
    `min_sample_s`.
    """
    out = {name: Measurement(name) for name in steps}
    live = []
    for name, fn in steps.items():
        if progress:
            progress.start(f"warm-up {name}" + (" (compiling)" if "compile" in name else ""))
        try:
            with peak_memory(device) as mem:
                for i in range(max(warmup, 1)):
                    fn(i)
                synchronize(device)
            out[name].peak_bytes = mem["bytes"]
            one = _sample(fn, 0, 1, device, clock)
            out[name].inner = max(1, min(max_inner, math.ceil(min_sample_s / max(one, 1e-9))))
            live.append(name)
        except Exception as exc:  # report it, keep timing the others
            out[name].error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        if progress:
            progress.done()
    counter = 0
    for r in range(rounds):
        if progress:
            progress.start(f"round {r + 1}/{rounds}")
        k = r % max(len(live), 1)
        for name in live[k:] + live[:k]:
            m = out[name]
            m.times.append(_sample(steps[name], counter, m.inner, device, clock))
            counter += m.inner
        if progress:
            progress.done()
    return out


NO_DIFFERENCE = "no difference"


def ratio_spread(base: Sequence[float], other: Sequence[float]) -> Tuple[float, float, float]:
    """(min, ratio, max): the speedup of `other` over `base` as the ratio of their medians, and the
    range of the per-round ratios base[r] / other[r]; NaNs when either is missing.

    The ratio of medians, not the median of per-round ratios: the latter can say "faster" for an
    implementation whose median time is the slower one. This is the one speedup definition of the
    CLI table, the plot and the benchmark JSON (benchmarks/harness.py).
    """
    ratios = sorted(b / o for b, o in zip(base, other) if o > 0)
    if not ratios or statistics.median(other) <= 0:
        return (float("nan"),) * 3
    return ratios[0], statistics.median(base) / statistics.median(other), ratios[-1]


def verdict(spread: Tuple[float, float, float]) -> str:
    """"faster" / "slower" only where the ratio of medians and every round agree; else "no difference"
    (the per-round range straddles 1.0: the rounds do not settle which is faster)."""
    lo, ratio, hi = spread
    if ratio != ratio:
        return ""
    if ratio > 1 and lo > 1:
        return "faster"
    if ratio < 1 and hi < 1:
        return "slower"
    return NO_DIFFERENCE


def format_spread(spread: Tuple[float, float, float], times: str = "x", dash: str = "-") -> str:
    """"1.52x [1.40-1.61]", with " no difference" appended where the range straddles 1.0."""
    lo, ratio, hi = spread
    if ratio != ratio:
        return dash
    text = f"{ratio:.2f}{times} [{lo:.2f}{dash}{hi:.2f}]"
    return text + f" {NO_DIFFERENCE}" if verdict(spread) == NO_DIFFERENCE else text


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


class Progress:
    """A progress line on stderr that names the step now running.

    On a terminal the line is redrawn in place; anywhere else (CI logs, pipes) each step is one plain
    line, so logs get no carriage returns. `start(what)` announces a step, `done()` counts it.
    """

    def __init__(self, total: int, desc: str, enabled: bool = True, stream=None):
        self.total, self.n, self.desc = total, 0, desc
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._width = 0

    def _bar(self) -> str:
        width = 24
        filled = int(width * self.n / max(self.total, 1))
        return f"[{'#' * filled}{'.' * (width - filled)}] {self.n}/{self.total}"

    def start(self, what: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            line = f"{self.desc} {self._bar()} {what} ..."
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(f"{self.desc}: [{self.n + 1}/{self.total}] {what} ...\n")
        self.stream.flush()

    def done(self) -> None:
        self.n += 1

    def update(self, what: str = "") -> None:
        """Count one finished step `what` (for callers that only report completions)."""
        self.done()
        if self.enabled and self.tty:
            line = f"{self.desc} {self._bar()} done: {what}"
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
            self.stream.flush()
        elif self.enabled:
            self.stream.write(f"{self.desc}: [{self.n}/{self.total}] done: {what}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


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


def import_timm():
    """The timm module, or None with the reason (timm is optional and never a fastwin dependency).

    Through `fastwin.timm_compat`, like the benchmarks: the GPU image has timm but no torchvision.
    """
    from .timm_compat import import_timm as _import

    timm = _import()
    return (timm, None) if timm is not None else (None, "timm is not installed (or does not import here)")


def candidates(device: torch.device, compile_reference: bool = True, with_timm: bool = True) -> List[str]:
    """What to compare on `device`, in table order: reference (+compile), auto, each fast backend, timm,
    and on a CPU ONNX Runtime and OpenVINO (rows that say why they are skipped when not installed)."""
    import fastwin

    names = ["reference"] + (["reference+compile"] if compile_reference else []) + ["auto"]
    table = fastwin.backends()
    names += [b for b in DEVICE_BACKENDS.get(device.type, ()) if table.get(b)]
    if with_timm:
        names.append("timm")
    if device.type == "cpu":
        names += list(EXPORTED)
    return names


def suggest_models(name: str, n: int = 5) -> List[str]:
    """Registered models close to `name`: glob matches of name* / *name*, then difflib's close matches."""
    import fastwin

    found = fastwin.list_models(f"{name}*") + fastwin.list_models(f"*{name}*")
    found += difflib.get_close_matches(name, fastwin.list_models(), n=n, cutoff=0.5)
    return list(dict.fromkeys(found))[:n]


@dataclasses.dataclass
class Result:
    name: str                      # "reference", "reference+compile", "auto", "cpp", "timm", ...
    times: List[float]             # per-round seconds per step (interleaved rounds)
    batch: int = 1
    peak_bytes: Optional[int] = None
    error: Optional[str] = None    # why it did not run ("skipped: ..." for a reason, not a failure)

    @property
    def seconds(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def images_per_s(self) -> float:
        return self.batch / self.seconds if self.times else float("nan")

    @property
    def failed(self) -> bool:
        return self.error is not None and not self.error.startswith("skipped")


def _build_runner(name: str, model_name: str, model: torch.nn.Module, img_size, train: bool, device):
    """(module, backend) for runner `name`; raises RuntimeError('skipped: ...') when it cannot exist here."""
    base = name.split("+")[0]
    if base == "timm":
        timm, why = import_timm()
        if timm is None:
            raise RuntimeError(f"skipped: {why}")
        if model_name not in timm.list_models():
            raise RuntimeError(f"skipped: timm has no {model_name}")
        kwargs = {} if img_size is None else {"img_size": img_size}
        return timm.create_model(model_name, **kwargs).to(device).train(train), "reference"
    return model, base


def bench_model(model_name: str, batch: int, dtype: torch.dtype, train: bool, device: torch.device,
                img_size: Optional[int] = None, names: Optional[Sequence[str]] = None, rounds: int = 5,
                warmup: int = 1, min_sample_s: float = 0.0, progress: bool = True, clock: str = "wall") -> List[Result]:
    """Per-step time (and peak memory on CUDA) of one model under each runner in `names`, interleaved."""
    import fastwin

    kwargs = {} if img_size is None else {"img_size": img_size}
    model = fastwin.create_model(model_name, **kwargs).to(device).train(train)
    size = img_size or getattr(model, "img_size", 224)
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    images = [torch.randn(batch, 3, *size, device=device) for _ in range(3)]  # rotated inputs
    names = list(names or candidates(device))
    errors, steps, exports = {}, {}, {}
    for name in names:
        try:
            if name in EXPORTED:
                from .bench_exported import exported_step

                steps[name] = exported_step(name, model, images, train, dtype, exports)
                continue
            module, backend = _build_runner(name, model_name, model, img_size, train, device)
        except Exception as exc:
            errors[name] = str(exc) if str(exc).startswith("skipped") else f"{type(exc).__name__}: {exc}"[:200]
            continue
        runner = torch.compile(module) if name.endswith("+compile") else module
        inner = model_step(runner, images, train, dtype)

        def step(i, inner=inner, backend=backend):
            with fastwin.set_backend(backend):
                inner(i)

        steps[name] = step
    bar = Progress(len(steps) + rounds, f"{model_name} b{batch} {'train' if train else 'infer'}", progress)
    timed = interleaved(steps, device, rounds=rounds, warmup=warmup, min_sample_s=min_sample_s, progress=bar,
                        clock=clock)
    bar.close()
    results = []
    for name in names:
        if name in errors:
            results.append(Result(name, [], batch, error=errors[name]))
        else:
            m = timed[name]
            results.append(Result(name, m.times, batch, m.peak_bytes, m.error))
    return results


def format_table(results: List[Result], title: str) -> str:
    """Median ms/step with its min-max, img/s, and speedups over the reference and timm (`ratio_spread`)."""
    ok = {r.name: r for r in results if r.times}
    bases = [b for b in ("reference", "timm") if b in ok]
    header = ["backend", "ms/step", "min-max ms", "img/s"] + [f"vs {b}" for b in bases] + ["peak MiB"]
    rows, notes = [header], {}
    for r in results:
        if not r.times:
            notes[len(rows)] = r.error or "no result"
            rows.append([r.name] + [""] * (len(header) - 1))
            continue
        rows.append([r.name, f"{r.seconds * 1e3:.1f}", f"{min(r.times) * 1e3:.1f}-{max(r.times) * 1e3:.1f}",
                     f"{r.images_per_s:.1f}"]
                    + [format_spread(ratio_spread(ok[b].times, r.times)) if b != r.name else "1" for b in bases]
                    + [f"{r.peak_bytes / 2**20:.0f}" if r.peak_bytes is not None else "-"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [title]
    for i, row in enumerate(rows):
        if i in notes:  # skipped or failed: the reason instead of numbers
            lines.append(row[0].ljust(widths[0]) + "  " + notes[i])
        else:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    rounds = max((len(r.times) for r in results), default=0)
    lines.append(f"({rounds} interleaved rounds; speedup = ratio of the median times [per-round min-max]; "
                 f"{NO_DIFFERENCE!r} where that range straddles 1.0)")
    return "\n".join(lines)


def plot_series(results: Dict[str, List[Result]]):
    """What `plot` draws: (cases, runners in table order, {runner: [(median, low, high) per case]})."""
    cases = list(results)
    names: List[str] = []
    for rs in results.values():
        names += [r.name for r in rs if r.times and r.name not in names]
    series = {}
    for name in names:
        row = []
        for case in cases:
            by = {r.name: r for r in results[case] if r.times}
            row.append(ratio_spread(by["reference"].times, by[name].times) if "reference" in by and name in by
                       else (float("nan"),) * 3)
        series[name] = row
    return cases, names, series


def plot(results: Dict[str, List[Result]], path: str) -> None:
    """Bar chart of per-round speedups over the reference, bars in table order, whiskers min-max."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'fastwin[plot]'") from exc
    cases, names, series = plot_series(results)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(cases) * max(len(names), 1)), 4.5))
    width = 0.8 / max(len(names), 1)
    for j, name in enumerate(names):
        med = [m if m == m else 0.0 for _, m, _ in series[name]]
        err = [[m - lo if m == m else 0.0 for lo, m, _ in series[name]],
               [hi - m if m == m else 0.0 for _, m, hi in series[name]]]
        xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(cases))]
        ax.bar(xs, med, width, yerr=err, capsize=3, label=name)
        for x, m, up in zip(xs, med, err[1]):  # above the whisker, not across it
            if m:
                ax.annotate(f"{m:.2f}x", (x, m + up), xytext=(0, 2), textcoords="offset points", ha="center",
                            va="bottom", fontsize=8)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(cases)), cases)
    ax.set_ylabel("speedup over reference eager\n(median of interleaved rounds, whiskers min-max)")
    ax.set_title("fastwin: throughput relative to the pure-PyTorch reference")
    ax.margins(y=0.15)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # beside the bars, never over them
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
