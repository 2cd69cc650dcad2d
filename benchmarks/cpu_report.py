"""The CPU figures of the README: whole-model interleaved ratios, written as committed JSON.

    python benchmarks/cpu_report.py                              # all cores, wall time
    python benchmarks/cpu_report.py --threads 1 --clock cpu      # one thread, process CPU time
    python benchmarks/cpu_report.py --threads 1 --clock cpu --train --batch 8 --out ...   # fwd+bwd rows
    python benchmarks/make_table.py --write-readme benchmarks/results/cpu-*.json

For each model (Swin-T and UniFormer-S at batch 1 and 8, 224px, fp32 inference by default) the
reference, `auto`, `cpp`, timm's model (eager; timm is imported through timm_shim.py when torchvision
is missing), and the model's ONNX export in ONNX Runtime and OpenVINO (fastwin/bench_exported.py;
rows say why they are skipped when a package is missing, and always in training) run in interleaved
rounds (`fastwin.bench.bench_model`); the JSON has one row per
(case, implementation) in the format of the pytest-benchmark suite's JSON (`extra_info.case`, `impl`,
`speedup_vs_<baseline>` = median of the per-round ratios, `speedup_vs_<baseline>_spread` = [min, max]),
plus `fastwin_environment` (device, date, versions, threads, clock, load average before and after).
On a machine shared with other jobs, wall-time ratios at 2 threads are distorted by preemption (an
OpenMP barrier waits for a descheduled thread); `--threads 1 --clock cpu` measures the work itself.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import re
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from harness import environment_info, speedups  # noqa: E402
from timm_shim import import_timm  # noqa: E402

from fastwin import bench  # noqa: E402

MODELS = ("swin_tiny_patch4_window7_224", "uniformer_small")
BATCHES = (1, 8)
NAMES = ("reference", "auto", "cpp", "timm", "onnxruntime", "openvino")
MIN_SAMPLE_S = 0.25  # batch 1 steps take ~0.1 s: a few calls per sample


def _row(case, impl, result, times_by_impl, rounds, batch):
    stats = {"median": result.seconds, "min": min(result.times), "max": max(result.times),
             "mean": sum(result.times) / len(result.times), "rounds": len(result.times), "data": result.times}
    info = {"case": case, "impl": impl, "mode": case.rsplit(" ", 1)[-1], "dtype": "float32", "batch": batch,
            "images_per_s": round(result.images_per_s, 2)}
    info.update(speedups(times_by_impl, impl))
    return {"name": f"cpu_report[{case}]::{impl}", "group": f"model {case}", "stats": stats, "extra_info": info}


def _exporter_versions() -> dict:
    out = {}
    for name in ("onnxruntime", "openvino"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # optional: the rows then say why they were skipped
            pass
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="default: torch's (all cores)")
    ap.add_argument("--clock", choices=tuple(bench.CLOCKS), default="wall")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--model", action="append", help="model name (repeatable; default Swin-T and UniFormer-S, 224px)")
    ap.add_argument("--batch", type=int, action="append", help="batch size (repeatable; default 1 and 8)")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/cpu-<device>-<threads>t-<clock>-<date>.json)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import_timm()  # registers torchvision stand-ins if needed, so bench_model's `import timm` works
    device = torch.device("cpu")
    env = environment_info(device)
    env.update(_exporter_versions())
    env.update(threads=torch.get_num_threads(), clock=args.clock, rounds=args.rounds,
               load_average_before=[round(x, 2) for x in os.getloadavg()],
               command="python benchmarks/cpu_report.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    rows = []
    models = [(m, b, 224) for m in (args.model or MODELS) for b in (args.batch or BATCHES)]
    for name, batch, img in models:
        results = bench.bench_model(name, batch, torch.float32, args.train, device, img_size=img, names=NAMES,
                                    rounds=args.rounds, warmup=1, min_sample_s=MIN_SAMPLE_S, progress=True,
                                    clock=args.clock)
        title = f"{name} b{batch} {img}px {'train' if args.train else 'infer'}"
        print(bench.format_table(results, f"{title}, {torch.get_num_threads()} threads, {args.clock} time"),
              flush=True)
        times = {r.name: r.times for r in results if r.times}
        for r in results:
            if r.times:
                rows.append(_row(title, r.name, r, times, args.rounds, batch))
            else:
                env.setdefault("not_run", {})[f"{title} {r.name}"] = r.error
    env["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    device_tag = re.sub(r"[^A-Za-z0-9]+", "_", env["device"]).strip("_")
    mode = "-train" if args.train else ""
    out = pathlib.Path(args.out or pathlib.Path(__file__).resolve().parent / "results" /
                       f"cpu-{device_tag}-{torch.get_num_threads()}t-{args.clock}{mode}-{datetime.date.today()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"fastwin_environment": env, "benchmarks": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
