"""Turn committed benchmark JSON (benchmarks/results/*.json) into the README's performance tables.

    python benchmarks/make_table.py benchmarks/results/*.json            # print the tables
    python benchmarks/make_table.py --write-readme benchmarks/results/*.json

GPU runs fill the README section between `<!-- perf-table -->` markers, CPU runs (device "cpu" in the
file's `fastwin_environment`; committed as `cpu-*.json`) the one between `<!-- cpu-perf-table -->`
markers; nothing else in the README is touched, and every number shown comes from the given files.
Speedups are ratios of median times from interleaved rounds (`speedup_vs_<baseline>` in `extra_info`)
with the per-round [min-max], "no difference" where that range straddles 1.0 (`fastwin.bench`'s one
rule); SPEC §8 targets are marked met / not met on the ratio.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from fastwin.bench import format_spread  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
MARKERS = {"gpu": ("<!-- perf-table -->", "<!-- /perf-table -->"),
           "cpu": ("<!-- cpu-perf-table -->", "<!-- /cpu-perf-table -->")}

# (description, case prefix, impl, baseline, minimum ratio) — SPEC §8 / issue #15, ratios within one run.
TARGETS = {
    "gpu": [
        ("Swin-T stage 1 window attention fwd vs reference", "swin_t-224-s1 fwd", "triton", "reference", 5.0),
        ("Swin-T stage 1 window attention fwd+bwd vs reference", "swin_t-224-s1 fwd+bwd", "triton", "reference", 4.0),
        ("Swin-T stage 1 window attention fwd vs FlexAttention", "swin_t-224-s1 fwd", "triton", "flex", 2.0),
        ("Swin-T inference b256 vs reference", "swin_tiny_patch4_window7_224 b256 224px infer", "triton", "reference",
         3.0),
        ("Swin-T inference b256 vs torch.compile(reference)", "swin_tiny_patch4_window7_224 b256 224px infer", "triton",
         "reference+compile", 1.3),
        ("Swin-T training step vs reference", "swin_tiny_patch4_window7_224 b256 224px train", "triton", "reference",
         1.5),
        ("UniFormer-S inference vs reference", "uniformer_small b256 224px infer", "triton", "reference", 2.0),
        ("dwconv vs cuDNN channels-last", "uniformer_s-s1-pos fwd", "triton", "cudnn-channels_last", 1.5),
    ],
    # SPEC §8 / issue #24: fastwin's default path (`auto`) against what a CPU user would otherwise deploy
    "cpu": [(f"{label} inference b{b}, auto vs ONNX Runtime", f"{model} b{b} 224px infer", "auto", "onnxruntime", 1.0)
            for label, model in (("Swin-T", "swin_tiny_patch4_window7_224"), ("UniFormer-S", "uniformer_small"))
            for b in (1, 8)]
    + [(f"Swin-T inference b{b}, auto vs timm eager", f"swin_tiny_patch4_window7_224 b{b} 224px infer", "auto", "timm",
        1.3) for b in (1, 8)],
}


def kind(env) -> str:
    """"gpu" for runs on a CUDA device (their environment records the CUDA version), else "cpu"."""
    return "gpu" if env.get("cuda") else "cpu"


def load(paths):
    runs = []
    for p in paths:
        data = json.loads(pathlib.Path(p).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
            continue  # other reports kept in results/ (e.g. kernel_resources.py's register / spill JSON)
        env = data.get("fastwin_environment", {})
        index = {(b["extra_info"].get("case"), b["extra_info"].get("impl")): b
                 for b in data["benchmarks"] if "case" in b.get("extra_info", {})}
        runs.append((pathlib.Path(p).name, env, index))
    return runs


def _speedup(row, base, index, case):
    """(ratio of medians, per-round min, max) of row's speedup over `base` (`fastwin.bench.ratio_spread`).

    Files written before the ratio-of-medians rule kept the median of per-round ratios in
    `speedup_vs_<base>`: the ratio is recomputed from the two rows' median times wherever both rows are
    there, so no table shows a slower median as faster.
    """
    info = row["extra_info"]
    med = info.get(f"speedup_vs_{base}")
    ref = index.get((case, base))
    ratio = ref["stats"]["median"] / row["stats"]["median"] if ref is not None else med
    if ratio is None:
        return None
    lo, hi = info.get(f"speedup_vs_{base}_spread", [ratio, ratio])
    return lo, ratio, hi


def _fmt(s):
    return "—" if s is None else format_spread(s, times="×", dash="–")


def _contended(env) -> bool:
    """A wall-time run on several threads while other jobs kept the machine busy (load > cores)."""
    load = (env.get("load_average_before") or env.get("load_average") or [0])[0]
    return env.get("clock", "wall") == "wall" and (env.get("threads") or 1) > 1 and load > (env.get("cores") or 1)


def _ms(seconds) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


def table(runs, which="gpu") -> str:
    lines = []
    for name, env, index in runs:
        extra = ""
        if which == "cpu":
            load = env.get("load_average_before") or env.get("load_average")
            threads = env.get("threads", "?")
            extra = (f", {threads} thread{'' if threads == 1 else 's'}, {env.get('clock', 'wall')} time, "
                     f"ISA {env.get('cpu_isa', '?')}" + (f", timm {env['timm']}" if env.get("timm") else "")
                     + (f", load average {load[0]:.1f}" if load else ""))
        lines.append(f"**{env.get('device', '?')}**, {env.get('date', '?')}, torch {env.get('torch', '?')}, "
                     f"triton {env.get('triton', '-')}{extra} (`benchmarks/results/{name}`)\n")
        contended = _contended(env)
        if contended:
            lines.append("The machine was shared with other jobs (load above the core count): preempted threads "
                         "stall every parallel op, which penalizes implementations with more ops, so these wall-time "
                         "ratios are marked inconclusive; the one-thread CPU-time run measures the work itself.\n")
        cases = {k[0] for k in index}
        targets = TARGETS[which] if any(t[1] in cases for t in TARGETS[which]) else []  # none in a training run
        if targets:
            lines.append("| target | measured: ratio of medians [per-round min–max] | required | status |")
            lines.append("|---|---|---|---|")
        for desc, case, impl, base, need in targets:
            row = index.get((case, impl))
            s = None if row is None else _speedup(row, base, index, case)
            if s is None:
                lines.append(f"| {desc} | not measured | ≥ {need}× | — |")
                continue
            status = "inconclusive (busy machine)" if contended else ("met" if s[1] >= need else "not met")
            lines.append(f"| {desc} | {_fmt(s)} | ≥ {need}× | {status} |")
        if targets:
            lines.append("")
        shown = {k: b for k, b in index.items() if which != "cpu" or "px " in k[0]}  # CPU: model rows only
        bases = [b for b in ("reference", "reference+compile", "timm", "timm+compile", "onnxruntime", "openvino", "flex",
                             "cudnn-channels_last")
                 if any(k[1] == b for k in shown)]
        lines.append("| case | impl | median ms | rounds | " + " | ".join(f"vs {b}" for b in bases) + " |")
        lines.append("|---|---|---|---|" + "---|" * len(bases))
        for (case, impl), b in sorted(shown.items()):
            cells = ["" if base == impl else _fmt(_speedup(b, base, index, case)) for base in bases]
            lines.append(f"| {case} | {impl} | {_ms(b['stats']['median'])} | {b['stats'].get('rounds', '?')} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _write(body: str, which: str, text: str) -> str:
    start, end = MARKERS[which]
    if start not in body:
        sys.exit(f"README.md has no {start} ... {end} section")
    return re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{text}\n{end}", body, flags=re.S)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+")
    ap.add_argument("--write-readme", action="store_true")
    args = ap.parse_args(argv)
    runs = load(args.json)
    texts = {which: table([r for r in runs if kind(r[1]) == which], which) for which in ("gpu", "cpu")}
    if not args.write_readme:
        for which, text in texts.items():
            if text:
                print(f"## {which.upper()}\n{text}")
        return 0
    readme = ROOT / "README.md"
    body = readme.read_text()
    for which, text in texts.items():
        if text:
            body = _write(body, which, text)
    readme.write_text(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
