"""Turn committed benchmark JSON (benchmarks/results/*.json) into the README's performance table.

    python benchmarks/make_table.py benchmarks/results/*.json            # print the table
    python benchmarks/make_table.py --write-readme benchmarks/results/*.json

The README section between `<!-- perf-table -->` markers is replaced; nothing else in it is touched,
and every number shown comes from the given files. SPEC §8 targets are marked met / not met.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
START, END = "<!-- perf-table -->", "<!-- /perf-table -->"

# (description, case prefix, impl, baseline, minimum ratio) — SPEC §8, ratios within one run.
TARGETS = [
    ("Swin-T stage 1 window attention fwd vs reference", "swin_t-224-s1 fwd", "triton", "reference", 5.0),
    ("Swin-T stage 1 window attention fwd+bwd vs reference", "swin_t-224-s1 fwd+bwd", "triton", "reference", 4.0),
    ("Swin-T stage 1 window attention fwd vs FlexAttention", "swin_t-224-s1 fwd", "triton", "flex", 2.0),
    ("Swin-T inference b256 vs reference", "swin_tiny_patch4_window7_224 b256 224px infer", "triton", "reference", 3.0),
    ("Swin-T inference b256 vs torch.compile(reference)", "swin_tiny_patch4_window7_224 b256 224px infer", "triton",
     "reference+compile", 1.3),
    ("Swin-T training step vs reference", "swin_tiny_patch4_window7_224 b256 224px train", "triton", "reference", 1.5),
    ("UniFormer-S inference vs reference", "uniformer_small b256 224px infer", "triton", "reference", 2.0),
    ("dwconv vs cuDNN channels-last", "uniformer_s-s1-pos fwd", "triton", "cudnn-channels_last", 1.5),
    ("CPU: Swin-T inference, cpp vs reference (small set)", "swin_tiny_patch4_window7_224 b2 112px infer", "cpp",
     "reference", 1.5),
]


def load(paths):
    runs = []
    for p in paths:
        data = json.loads(pathlib.Path(p).read_text())
        env = data.get("fastwin_environment", {})
        index = {(b["extra_info"].get("case"), b["extra_info"].get("impl")): b
                 for b in data["benchmarks"] if "case" in b.get("extra_info", {})}
        runs.append((pathlib.Path(p).name, env, index))
    return runs


def table(runs) -> str:
    lines = []
    for name, env, index in runs:
        lines.append(f"**{env.get('device', '?')}**, {env.get('date', '?')}, torch {env.get('torch', '?')}, "
                     f"triton {env.get('triton', '-')} (`benchmarks/results/{name}`)\n")
        lines.append("| target (SPEC §8) | measured | required | status |")
        lines.append("|---|---|---|---|")
        for desc, case, impl, base, need in TARGETS:
            fast, ref = index.get((case, impl)), index.get((case, base))
            if fast is None or ref is None:
                lines.append(f"| {desc} | not measured | ≥ {need}× | — |")
                continue
            ratio = ref["stats"]["median"] / fast["stats"]["median"]
            lines.append(f"| {desc} | {ratio:.2f}× | ≥ {need}× | {'met' if ratio >= need else 'not met'} |")
        lines.append("")
        lines.append("| case | impl | median ms | GB/s | % copy BW | vs reference |")
        lines.append("|---|---|---|---|---|---|")
        for (case, impl), b in sorted(index.items()):
            info = b["extra_info"]
            lines.append(f"| {case} | {impl} | {b['stats']['median'] * 1e3:.3f} | {info.get('achieved_GBps', '-')} | "
                         f"{info.get('pct_of_copy_bw', '-')} | {info.get('speedup_vs_reference', '-')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+")
    ap.add_argument("--write-readme", action="store_true")
    args = ap.parse_args(argv)
    text = table(load(args.json))
    if not args.write_readme:
        print(text)
        return 0
    readme = ROOT / "README.md"
    body = readme.read_text()
    if START not in body:
        sys.exit(f"README.md has no {START} ... {END} section")
    body = re.sub(re.escape(START) + ".*?" + re.escape(END), f"{START}\n{text}\n{END}", body, flags=re.S)
    readme.write_text(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
