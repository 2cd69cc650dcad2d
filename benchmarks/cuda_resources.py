"""Ahead-of-time resource report of fastwin's CUDA C++ kernels (csrc/cuda/*.cu; no GPU needed).

    python benchmarks/cuda_resources.py [--arch 80,90a] [--json FILE] [--jobs N] [--quiet]

Compiles every .cu file with nvcc for each architecture (the extension's nvcc flags: -O3 and torch's
half/bfloat16 defines), reads `ptxas -v` (registers, stack frame, spill stores / loads, static shared
memory) and the SASS from `cuobjdump -sass` (HMMA / HGMMA tensor-core instruction counts, FFMA
counts) per kernel, and joins them with the launch plan of real model shapes (csrc/include/fastwin/
attention_mma.h, evaluated by a small C++ helper built with g++): the dynamic shared memory of the
mode the plan picks (resident whole-window vs streaming) and the resulting occupancy. Row keys are
those of benchmarks/kernel_resources.py (kernel, shape, dtype, config, arch, registers, stack_bytes,
shared_bytes, warps_per_sm, tensor_cores) plus target, hmma_count, ffma_count, spill_store_bytes,
spill_load_bytes.

Occupancy uses the A100 (sm_80) / H100 (sm_90) limits: 64K registers allocated per warp in units of
256, 64 warps, 32 blocks and 164 KB / 228 KB of shared memory per SM, 1 KB reserved per block.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
sys.path.insert(0, CSRC)
import cuda_toolkit  # noqa: E402 - csrc/cuda_toolkit.py: the one toolkit lookup (wrapper nvcc included)
INCLUDE = os.path.join(CSRC, "include")

KEYS = ("kernel", "shape", "dtype", "config", "arch", "target", "registers", "stack_bytes", "shared_bytes",
        "warps_per_sm", "tensor_cores", "hmma_count", "ffma_count", "spill_store_bytes", "spill_load_bytes")

# The extension's nvcc flags (csrc/build_config.py) and the defines torch adds to every CUDA build.
NVCC_FLAGS = ["-std=c++17", "-O3", "-lineinfo", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
              "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__", "--expt-relaxed-constexpr"]
_SMEM_PER_SM = {80: 167936, 90: 233472}
_DTYPES = {"__half": "fp16", "__nv_bfloat16": "bf16", "float": "fp32"}


# ----------------------------------------------------------------------------------------------
# Tools
# ----------------------------------------------------------------------------------------------

def find_tool(name: str) -> Optional[str]:
    """nvcc / cuobjdump / c++filt from PATH, CUDA_HOME, or (cuobjdump) the copy Triton ships."""
    path = shutil.which(name)
    if path:
        return path
    home = cuda_toolkit.find_toolkit()
    if home and os.path.exists(os.path.join(home, "bin", name)):
        return os.path.join(home, "bin", name)
    try:
        import triton

        cand = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
        return cand if os.path.exists(cand) else None
    except ImportError:
        return None


def tool_version(path: Optional[str]) -> str:
    if not path:
        return "absent"
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    return out[-1] if out else "unknown"


def cuda_include_dir() -> Optional[str]:
    """The CUDA toolkit's include directory (cuda_runtime.h), or None."""
    home = cuda_toolkit.find_toolkit()
    return os.path.join(home, "include") if home else None


def cu_files() -> List[str]:
    return sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))


# ----------------------------------------------------------------------------------------------
# Compiling and parsing
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class KernelStats:
    name: str               # demangled, without the namespaces
    registers: int = 0
    stack_bytes: int = 0
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0
    static_smem: int = 0
    hmma_count: Optional[int] = None
    ffma_count: Optional[int] = None


@dataclasses.dataclass
class CompileResult:
    path: str
    arch: str               # "80", "90a"
    returncode: int
    log: str
    kernels: Dict[str, KernelStats]


def demangle(names: List[str]) -> Dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return {n: n for n in names}
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    clean = [re.sub(r"fastwin::((\(anonymous namespace\)|mma_detail)::)*", "", o) for o in out]
    return dict(zip(names, clean))


def parse_ptxas(log: str) -> Dict[str, KernelStats]:
    """ptxas -v: 'Compiling entry function' ... 'N bytes stack frame, S bytes spill stores, L bytes
    spill loads' ... 'Used R registers, ... X bytes smem'."""
    stats, cur = {}, None
    for line in log.splitlines():
        m = re.search(r"(?:Compiling entry function|Function properties for) '?(\w+)'?", line)
        if m:
            cur = stats.setdefault(m.group(1), KernelStats(m.group(1)))
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            cur.stack_bytes, cur.spill_store_bytes, cur.spill_load_bytes = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur.registers = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            cur.static_smem = int(s.group(1)) if s else 0
    return stats


def parse_sass(sass: str) -> Dict[str, Tuple[int, int]]:
    """Per mangled function: (HMMA + HGMMA count, FFMA count)."""
    out, cur = {}, None
    for line in sass.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            cur = m.group(1)
            out[cur] = (0, 0)
            continue
        if cur:
            h, f = out[cur]
            if re.search(r"\bH(G)?MMA\.", line):
                h += 1
            elif re.search(r"\bFFMA\b", line):
                f += 1
            out[cur] = (h, f)
    return out


def compile_one(path: str, arch: str, workdir: str) -> CompileResult:
    nvcc, cuobjdump = find_tool("nvcc"), find_tool("cuobjdump")
    cubin = os.path.join(workdir, f"{os.path.basename(path)}.sm_{arch}.cubin")
    cmd = [nvcc, "-cubin", f"-arch=sm_{arch}", *NVCC_FLAGS, "-Xptxas", "-v", "-I", INCLUDE, path, "-o", cubin]
    res = subprocess.run(cmd, capture_output=True, text=True)
    log = " ".join(cmd) + "\n" + res.stdout + res.stderr
    stats = parse_ptxas(res.stdout + res.stderr) if res.returncode == 0 else {}
    if res.returncode == 0 and cuobjdump:
        sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True).stdout
        for mangled, (h, f) in parse_sass(sass).items():
            if mangled in stats:
                stats[mangled].hmma_count, stats[mangled].ffma_count = h, f
    names = demangle(list(stats))
    kernels = {}
    for mangled, st in stats.items():
        st.name = names[mangled]
        kernels[st.name] = st
    return CompileResult(path, arch, res.returncode, log, kernels)


def compile_all(archs: List[str], jobs: int, workdir: str, files: Optional[List[str]] = None) -> List[CompileResult]:
    """Every .cu file once per architecture, the largest first (they dominate the wall time)."""
    files = files or cu_files()
    work = sorted(((f, a) for f in files for a in archs), key=lambda fa: -os.path.getsize(fa[0]))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        results = list(ex.map(lambda fa: compile_one(fa[0], fa[1], workdir), work))
    return sorted(results, key=lambda r: (r.path, r.arch))


# ----------------------------------------------------------------------------------------------
# Shapes and launch plans
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    kind: int          # 0 shifted windows, 2 global (AttnKind)
    batch: int
    hw: int            # map side (shifted) or tokens (global)
    heads: int
    head_dim: int
    window: int = 0
    shift: int = 0


def model_shapes() -> List[Shape]:
    """Swin-T/S and Swin-B at 224 (window 7), Swin-B at 384 (window 12), UniFormer-S global stages,
    ViT-B/16; the training batch sizes of benchmarks/kernel_resources.py."""
    out = []
    for model, embed, heads, img, window, batch in (("swin_t", 96, (3, 6, 12, 24), 224, 7, 128),
                                                   ("swin_b", 128, (4, 8, 16, 32), 224, 7, 128),
                                                   ("swin_b", 128, (4, 8, 16, 32), 384, 12, 32)):
        for s in range(4):
            hw = img // 4 // 2 ** s
            win = min(window, hw)
            for sh in ((0,) if hw <= window else (0, window // 2)):
                out.append(Shape(f"{model}-{img}-s{s + 1}{'-shift' if sh else ''}", 0, batch, hw, heads[s],
                                 embed // heads[0], win, sh))
    out += [Shape("uniformer_s-s3", 2, 64, 196, 5, 64), Shape("uniformer_s-s4", 2, 64, 49, 8, 64),
            Shape("vit_b16-224", 2, 64, 197, 12, 64)]
    return out


_PLAN_SRC = r"""
#include <cstdio>
#include <cstdlib>
#include "fastwin/attention_mma.h"
using namespace fastwin;
int main(int argc, char** argv) {
  for (int i = 1; i + 7 < argc; i += 8) {
    const int kind = atoi(argv[i]), B = atoi(argv[i + 1]), hw = atoi(argv[i + 2]), heads = atoi(argv[i + 3]);
    const int d = atoi(argv[i + 4]), w = atoi(argv[i + 5]), s = atoi(argv[i + 6]), sms = atoi(argv[i + 7]);
    AttnParams p{};
    p.kind = kind; p.heads = heads; p.d = d; p.s_chan = 1; p.scale = 1.0;
    if (kind == kShifted) {
      p.geom = make_window_geom(hw, hw, w, w, s, s, false);
      p.windows_per_image = p.geom.nWh * p.geom.nWw;
      p.groups = (long long)B * p.windows_per_image; p.N = w * w; p.wh = p.ww = w;
      p.has_table = true; p.has_qkv_bias = true;
    } else {
      p.groups = B; p.N = hw;
    }
    const mma_plan::MmaPlan m = mma_plan::make_plan(p, false, true, true, false, true, sms);
    std::printf("{\"dp\": %d, \"n16\": %d, \"fwd_resident\": %d, \"qo_resident\": %d, \"ko_resident\": %d, "
                "\"fwd_smem\": %zu, \"qo_smem\": %zu, \"ko_smem\": %zu, \"slots\": %lld, \"groups\": %lld}\n",
                m.dp, m.n16, m.fwd_resident, m.qo_resident, m.ko_resident,
                mma_plan::fwd_smem(m.fwd_resident, m.n16, m.dp), mma_plan::qo_smem(m.qo_resident, m.n16, m.dp),
                mma_plan::ko_smem(m.ko_resident, m.n16, m.dp, m.acc_smem), (long long)m.slots, (long long)p.groups);
  }
  return 0;
}
"""


def plans(shapes: List[Shape], workdir: str, sms: int = 132) -> Optional[List[dict]]:
    """The launch plan (training: bias-table and qkv_bias gradients wanted) of each shape."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if not cxx:
        return None
    src, exe = os.path.join(workdir, "plan.cpp"), os.path.join(workdir, "plan")
    with open(src, "w") as f:
        f.write(_PLAN_SRC)
    if subprocess.run([cxx, "-std=c++17", "-O1", "-I", INCLUDE, src, "-o", exe], capture_output=True).returncode:
        return None
    args = [str(v) for s in shapes for v in (s.kind, s.batch, s.hw, s.heads, s.head_dim, s.window, s.shift, sms)]
    out = subprocess.run([exe, *args], capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def warps_per_sm(regs: int, shared: int, warps: int, arch: int) -> int:
    """Resident warps per SM for a kernel using `regs` registers/thread and `shared` bytes/block."""
    regs_per_warp = -(-max(regs, 1) * 32 // 256) * 256
    by_regs = (65536 // regs_per_warp) // warps
    by_smem = _SMEM_PER_SM[arch] // (shared + 1024)
    return min(by_regs, by_smem, 64 // warps, 32) * warps


# ----------------------------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------------------------

def split_name(name: str) -> Tuple[str, List[str]]:
    m = re.match(r"(?:void )?(\w+)<(.*)>\(", name)
    if not m:
        return re.match(r"(?:void )?(\w+)", name).group(1), []
    return m.group(1), [x.strip() for x in m.group(2).split(",")]


def _row(kernel, shape, dtype, config, res: CompileResult, st: KernelStats, shared: int) -> dict:
    arch = int(res.arch.rstrip("a"))
    return dict(kernel=kernel, shape=shape, dtype=dtype, config=config, arch=arch, target=f"sm_{res.arch}",
                registers=st.registers, stack_bytes=st.stack_bytes, shared_bytes=shared + st.static_smem,
                warps_per_sm=warps_per_sm(st.registers, shared + st.static_smem, 4, arch),
                tensor_cores=bool(st.hmma_count), hmma_count=st.hmma_count, ffma_count=st.ffma_count,
                spill_store_bytes=st.spill_store_bytes, spill_load_bytes=st.spill_load_bytes)


def rows_for(results: List[CompileResult], shapes: List[Shape], shape_plans: Optional[List[dict]]) -> List[dict]:
    """One row per (tensor-core attention kernel, model shape, dtype, arch): the instantiation the
    shape dispatches to, with the plan's shared memory; one row per other kernel (shape 'any')."""
    rows = []
    for res in results:
        for st in res.kernels.values():
            kernel, targs = split_name(st.name)
            mma = kernel in ("attn_fwd_mma_kernel", "attn_bwd_q_kernel", "attn_bwd_kv_kernel")
            if not (mma and shape_plans):
                dtype = _DTYPES.get(targs[0], "") if targs else ""
                rows.append(_row(kernel, "any", dtype, ",".join(targs[1:]) or "-", res, st, 0))
                continue
            dp, served = int(targs[1]), 0
            for shape, plan in zip(shapes, shape_plans):
                if plan["dp"] != dp:
                    continue
                which = {"attn_fwd_mma_kernel": "fwd", "attn_bwd_q_kernel": "qo", "attn_bwd_kv_kernel": "ko"}[kernel]
                resident = bool(plan[f"{which}_resident"])
                config = f"d_pad={dp} {'resident' if resident else 'streaming'} n16={plan['n16']}"
                rows.append(_row(kernel, shape.name, _DTYPES[targs[0]], config, res, st, plan[f"{which}_smem"]))
                served += 1
            if not served:  # a head-dim width no listed model uses: its registers, spills and HMMA anyway
                rows.append(_row(kernel, "any", _DTYPES[targs[0]], f"d_pad={dp}", res, st, 0))
    return rows


def run(archs: List[str], jobs: int, log=print) -> Tuple[List[dict], List[str], dict]:
    with tempfile.TemporaryDirectory() as tmp:
        results = compile_all(archs, jobs, tmp)
        shapes = model_shapes()
        shape_plans = plans(shapes, tmp)
    errors = [r.log for r in results if r.returncode]
    meta = dict(nvcc=tool_version(find_tool("nvcc")), cuobjdump=tool_version(find_tool("cuobjdump")),
                flags=" ".join(NVCC_FLAGS), archs=[f"sm_{a}" for a in archs])
    return rows_for(results, shapes, shape_plans), errors, meta


def table(rows: List[dict]) -> str:
    head = ("kernel", "shape", "dtype", "config", "target", "regs", "stack", "spill st/ld", "smem", "warps/SM", "HMMA")
    body = [(r["kernel"], r["shape"], r["dtype"], r["config"], r["target"], str(r["registers"]), str(r["stack_bytes"]),
             f"{r['spill_store_bytes']}/{r['spill_load_bytes']}", str(r["shared_bytes"]), str(r["warps_per_sm"]),
             "-" if r["hmma_count"] is None else str(r["hmma_count"])) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*b) for b in body])


def summary(rows: List[dict]) -> str:
    """Per tensor-core attention instantiation and target: registers, spills, HMMA count, and the
    model shapes it serves (grouped by model) with their shared memory and occupancy."""
    lines = ["| kernel | dtype | d_pad | target | registers | spill bytes | HMMA | shapes: smem B, warps/SM |",
             "|---|---|---|---|---|---|---|---|"]
    mma = [r for r in rows if r["shape"] != "any"]
    keys = sorted({(r["kernel"], r["dtype"], r["config"].split()[0], r["target"]) for r in mma})
    for k, dt, dp, tg in keys:
        rs = [r for r in mma if (r["kernel"], r["dtype"], r["config"].split()[0], r["target"]) == (k, dt, dp, tg)]
        served: Dict[Tuple[int, int, str], List[str]] = {}
        for r in rs:
            mode = r["config"].split()[1]
            served.setdefault((r["shared_bytes"], r["warps_per_sm"], mode), []).append(r["shape"].split("-s")[0])
        text = "; ".join(f"{'/'.join(dict.fromkeys(v))} ({mode}) {smem}, {w}"
                         for (smem, w, mode), v in sorted(served.items()))
        r0 = rs[0]
        lines.append(f"| `{k}` | {dt} | {dp.split('=')[1]} | {tg} | {r0['registers']} | "
                     f"{r0['spill_store_bytes'] + r0['spill_load_bytes']} | {r0['hmma_count']} | {text} |")
    others = sorted({(r["kernel"], r["dtype"], r["config"], r["target"], r["registers"],
                      r["spill_store_bytes"] + r["spill_load_bytes"], r["hmma_count"], r["ffma_count"])
                     for r in rows if r["shape"] == "any"})
    if others:
        lines += ["", "| other kernels (no model shape) | dtype | template args | target | registers | spill bytes | "
                  "HMMA | FFMA |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| `{k}` | {dt or '-'} | {c} | {t} | {reg} | {sp} | {h} | {f} |"
                  for k, dt, c, t, reg, sp, h, f in others]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="80,90a", help="comma-separated targets, e.g. 80,90a")
    p.add_argument("--json", help="write {meta, rows} as JSON to this file")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    a = p.parse_args(argv)
    if not find_tool("nvcc"):
        print("nvcc not found", file=sys.stderr)
        return 2
    rows, errors, meta = run(a.arch.split(","), a.jobs)
    if not a.quiet:
        print(table(rows))
    print(summary(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "rows": [{k: r[k] for k in KEYS} for r in rows]}, f, indent=1)
            f.write("\n")
    for e in errors:
        print("COMPILE ERROR:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
