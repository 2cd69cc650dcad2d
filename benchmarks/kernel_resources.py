"""Ahead-of-time resource report of every fastwin Triton kernel (no GPU needed).

    python benchmarks/kernel_resources.py [--arch 90,80] [--json FILE] [--subset full|ci] [--jobs N]

Runs each launcher (window/shifted-window/global attention forward and backward, depthwise conv
forward and backward, depthwise conv + LayerNorm) on `meta` tensors of real model shapes, captures
every kernel launch, and compiles it for the requested NVIDIA architectures exactly as the JIT
would specialize it there: the kernel's own autotune prune picks the configs (as on a GPU, i.e.
with TRITON_INTERPRET unset), and Triton's own binder derives the signature, the `== 1` integer
specializations and the 16-byte divisibility attributes from the argument values. `ptxas` (shipped
with Triton) then gives, per kernel, shape, dtype and config:

    registers     per thread              stack_bytes   per-thread stack frame (spills)
    shared_bytes  dynamic + static smem   warps_per_sm  resident warps per SM (occupancy)
    tensor_cores  the SASS uses HMMA / HGMMA

Occupancy uses the H100 (sm_90) or A100 (sm_80) limits: 64K registers allocated per warp in units
of 256, 64 warps, 32 blocks and 228 KB (sm_90) / 164 KB (sm_80) of shared memory per SM, 1 KB
reserved per block. Identical specializations (many stages share them) are compiled once.

`--subset ci` compiles a small representative set (tests/test_triton_compile.py runs it).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

os.environ.pop("TRITON_INTERPRET", None)  # the prunes must see the GPU path, and @triton.jit a JITFunction

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime import driver  # noqa: E402
from triton.runtime.autotuner import Autotuner, Heuristics  # noqa: E402
from triton.runtime.jit import create_function_from_signature  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastwin.kernels.triton import dwconv as DW  # noqa: E402
from fastwin.kernels.triton import dwconv_layernorm as DWLN  # noqa: E402
from fastwin.kernels.triton import launch as LAUNCH  # noqa: E402
from fastwin.kernels.triton import window_attention_launchers as WAL  # noqa: E402

KEYS = ("kernel", "shape", "dtype", "config", "arch", "triton", "registers", "stack_bytes", "shared_bytes",
        "warps_per_sm", "tensor_cores")

_BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
_SMEM_PER_SM = {90: 233472, 80: 167936}  # 228 KB (H100), 164 KB (A100) usable by blocks
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ----------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Swin:
    name: str
    batch: int
    hw: int
    heads: int
    head_dim: int
    window: int
    shift: int


def swin_shapes() -> List[Swin]:
    """Swin-T/S (same stage shapes) and Swin-B at 224, Swin-B at 384 (window 12); both block kinds."""
    out = []
    for model, embed, heads, img, window, batch in (("swin_t", 96, (3, 6, 12, 24), 224, 7, 128),
                                                   ("swin_b", 128, (4, 8, 16, 32), 224, 7, 128),
                                                   ("swin_b", 128, (4, 8, 16, 32), 384, 12, 32)):
        for s in range(4):
            hw = img // 4 // 2 ** s
            win = min(window, hw)
            shifts = (0,) if hw <= window else (0, window // 2)
            for sh in shifts:
                out.append(Swin(f"{model}-{img}-s{s + 1}{'-shift' if sh else ''}", batch, hw, heads[s],
                                embed // heads[0], win, sh))
    return out


@dataclasses.dataclass(frozen=True)
class Glob:
    name: str
    batch: int
    tokens: int
    heads: int
    head_dim: int


GLOBAL = [Glob("uniformer_s-s3", 64, 196, 5, 64), Glob("uniformer_s-s4", 64, 49, 8, 64)]


@dataclasses.dataclass(frozen=True)
class Conv:
    name: str
    batch: int
    channels: int
    hw: int
    kernel: int
    fuse_ln: bool = False


CONV = [Conv("uniformer_s-s1-pos3x3", 64, 64, 56, 3), Conv("uniformer_s-s1-attn5x5", 64, 64, 56, 5),
        Conv("uniformer_s-s2-pos3x3", 64, 128, 28, 3), Conv("uniformer_s-s2-attn5x5", 64, 128, 28, 5),
        Conv("uniformer_s-s3-pos3x3+ln", 64, 320, 14, 3, True), Conv("uniformer_s-s4-pos3x3+ln", 64, 512, 7, 3, True)]


# ----------------------------------------------------------------------------------------------
# Capturing launches
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Launch:
    kernel: object
    args: tuple
    kwargs: dict


class _Capture:
    """Stands in for `launch.run` (every launcher's launch): records kernel, args and kwargs."""

    def __init__(self):
        self.launches: List[Launch] = []

    def __enter__(self):
        self._saved = LAUNCH.run
        LAUNCH.run = lambda kernel, grid, *args, **kwargs: self.launches.append(Launch(kernel, args, kwargs))
        return self

    def __exit__(self, *exc):
        LAUNCH.run = self._saved
        return False


def _meta(shape, dtype):
    return torch.empty(shape, device="meta", dtype=dtype)


def swin_launches(case: Swin, dtype, seq: bool) -> List[Launch]:
    """Forward + backward (all grads) of the partition-free op, or of the given-windows op with its mask."""
    C = case.heads * case.head_dim
    w = case.window
    table = _meta(((2 * w - 1) ** 2, case.heads), dtype)
    scale = case.head_dim ** -0.5
    with _Capture() as cap:
        if seq:
            nw = (case.hw // w) ** 2
            qkv = _meta((case.batch * nw, w * w, 3 * C), dtype)
            mask = _meta((nw, w * w, w * w), dtype) if case.shift else None
            out, lse = WAL.window_attention_fwd_triton(qkv, table, mask, case.heads, [w, w], scale)
            WAL.window_attention_bwd_triton(torch.empty_like(out), out, lse, qkv, table, mask, case.heads, [w, w],
                                            scale, [True, True, False])
        else:
            qkv = _meta((case.batch, case.hw, case.hw, 3 * C), dtype)
            bias = _meta((3 * C,), dtype)
            attrs = (case.heads, [w, w], [case.shift, case.shift], scale, False)
            out, lse = WAL.shifted_window_attention_fwd_triton(qkv, table, bias, *attrs)
            WAL.shifted_window_attention_bwd_triton(torch.empty_like(out), out, lse, qkv, table, bias, *attrs,
                                                    [True, True, True])
    return cap.launches


def global_launches(case: Glob, dtype) -> List[Launch]:
    scale = case.head_dim ** -0.5
    with _Capture() as cap:
        qkv = _meta((case.batch, case.tokens, 3 * case.heads * case.head_dim), dtype)
        out, lse = WAL.attention_fwd_triton(qkv, case.heads, scale)
        WAL.attention_bwd_triton(torch.empty_like(out), out, lse, qkv, case.heads, scale, [True])
    return cap.launches


def conv_launches(case: Conv, dtype, channels_last: bool) -> List[Launch]:
    x = _meta((case.batch, case.channels, case.hw, case.hw), dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = _meta((case.channels, 1, case.kernel, case.kernel), dtype)
    bias = _meta((case.channels,), dtype)
    with _Capture() as cap:
        if case.fuse_ln:
            lnw, lnb = _meta((case.channels,), dtype), _meta((case.channels,), dtype)
            results = DWLN.dwconv_layernorm_fwd_triton(x, weight, bias, lnw, lnb, 1e-6, "NCHW")
            tokens, normed, mean, rstd = results
            DWLN.dwconv_layernorm_bwd_triton(torch.empty_like(tokens), torch.empty_like(normed), tokens, mean, rstd,
                                             x, weight, bias, lnw, lnb, 1e-6, "NCHW", [True] * 5)
        else:
            y = DW.dwconv2d_fwd_triton(x, weight, bias, True, "NCHW")
            DW.dwconv2d_bwd_triton(torch.empty_like(y), x, weight, bias, True, "NCHW", [True] * 3)
    return cap.launches


# ----------------------------------------------------------------------------------------------
# Compiling
# ----------------------------------------------------------------------------------------------

def _name(kernel) -> str:
    return (kernel.fn if isinstance(kernel, Autotuner) else kernel).__name__


def _configs(kernel, args, kwargs) -> Tuple[object, List[Tuple[str, dict]]]:
    """(jit function, [(config name, launch kwargs)]) for the configs the kernel's prune keeps."""
    if isinstance(kernel, Heuristics):
        raise NotImplementedError("heuristics are not used by fastwin kernels")
    if not isinstance(kernel, Autotuner):
        name = "w%d" % kwargs.get("num_warps", 4) + (f"_s{kwargs['num_stages']}" if "num_stages" in kwargs else "")
        return kernel, [(name, dict(kwargs))]
    nargs = dict(zip(kernel.arg_names, args))
    configs = kernel.configs
    if kernel.early_config_prune:
        configs = kernel.early_config_prune(configs, nargs, **kwargs)
    out = []
    for c in configs:
        kw = dict(kwargs)
        kw.update(c.all_kwargs())
        name = "_".join(f"{k.replace('BLOCK_', 'B')}{v}" for k, v in c.kwargs.items() if k.startswith("BLOCK_"))
        name += f"_w{c.num_warps}_s{c.num_stages}" + (f"_r{c.maxnreg}" if c.maxnreg else "")
        out.append((name, {k: v for k, v in kw.items() if v is not None}))
    return kernel.fn, out


class _StubDriver:
    """Stands in for the CUDA driver while prunes run: reports the target being compiled for."""

    def __init__(self, arch):
        self.arch = arch

    def get_current_target(self):
        return GPUTarget("cuda", self.arch, 32)


@contextlib.contextmanager
def _target(arch):
    prev = driver._active
    driver.set_active(_StubDriver(arch))
    try:
        yield
    finally:
        driver.set_active(prev)


@dataclasses.dataclass
class Job:
    fn: object
    args: tuple
    kwargs: dict
    arch: int
    key: str = ""


def _bind(job: Job):
    """Triton's own binder: signature, constexprs, attributes and options, as `JITFunction.run`."""
    target = GPUTarget("cuda", job.arch, 32)
    backend = make_backend(target)
    fn = job.fn
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(job.kwargs)
    kwargs.setdefault("debug", False)
    bound, spec, opts = binder(*job.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, spec, opts)
    return target, options, signature, constexprs, attrs


def _compile(job: Job) -> dict:
    target, options, signature, constexprs, attrs = _bind(job)
    ck = triton.compile(ASTSource(job.fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(ck.asm["cubin"])
        f.flush()
        res = subprocess.run([os.path.join(_BIN, "cuobjdump"), "-res-usage", f.name], capture_output=True,
                             text=True, check=True).stdout
        sass = subprocess.run([os.path.join(_BIN, "cuobjdump"), "-sass", f.name], capture_output=True,
                              text=True, check=True).stdout
    usage = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", res))
    regs, stack = int(usage["REG"]), int(usage["STACK"])
    shared = int(ck.metadata.shared) + int(usage.get("SHARED", 0))
    warps = options.num_warps
    return dict(registers=regs, stack_bytes=stack, shared_bytes=shared,
                warps_per_sm=warps_per_sm(regs, shared, warps, job.arch),
                tensor_cores=bool(re.search(r"\bH(G)?MMA\b", sass)))


def warps_per_sm(regs: int, shared: int, warps: int, arch: int) -> int:
    """Resident warps per SM for a kernel using `regs` registers/thread and `shared` bytes/block."""
    regs_per_warp = -(-max(regs, 1) * 32 // 256) * 256  # allocated per warp in units of 256
    by_regs = (65536 // regs_per_warp) // warps
    by_smem = _SMEM_PER_SM[arch] // (shared + 1024)  # 1 KB per block reserved by the driver
    blocks = min(by_regs, by_smem, 64 // warps, 32)
    return blocks * warps


def _spec_key(job: Job) -> str:
    target, options, signature, constexprs, attrs = _bind(job)
    return repr((job.fn.__name__, job.arch, sorted(signature.items()),
                 sorted((k, str(v)) for k, v in constexprs.items()),
                 sorted((k, str(v)) for k, v in attrs.items()), sorted(options.__dict__.items())))


_JOBS: List[Job] = []


def _run_job(i):
    try:
        return i, _compile(_JOBS[i]), None
    except Exception as exc:  # reported per row; the caller decides whether that is fatal
        return i, None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

def collect(subset: str) -> List[Tuple[str, str, Launch]]:
    """[(shape name, dtype name, launch)] for every launcher at every listed shape and dtype."""
    out = []
    dtypes = ("bf16", "fp16", "fp32")
    swin = swin_shapes()
    glob, conv = GLOBAL, CONV
    if subset == "ci":
        swin = [s for s in swin if s.name in ("swin_t-224-s1-shift", "swin_b-384-s1-shift")]
        glob, conv = GLOBAL[:1], [CONV[1], CONV[4]]
        dtypes = ("bf16", "fp32")
    for dn in dtypes:
        dt = _DTYPES[dn]
        for s in swin:
            for seq in (False, True):
                if subset == "ci" and dn != "bf16" and seq:
                    continue  # CI: fp32 only in map mode (it is the slow part to compile)
                desc = (f"{s.name}{'-windows' if seq else ''} B{s.batch} {s.hw}x{s.hw} h{s.heads} d{s.head_dim} "
                        f"w{s.window} s{s.shift}")
                launches = swin_launches(s, dt, seq)
                if subset == "ci" and dn != "bf16" and s.name.startswith("swin_b"):
                    # and at Swin-B 384 only dq (one config per arch): with several key blocks it
                    # keeps a pre-Hopper entry of the tile table (window_attention_tiles.py)
                    launches = [ln for ln in launches if _name(ln.kernel) == "_window_attention_bwd_dq_kernel"]
                out += [(desc, dn, ln) for ln in launches]
        for g in glob:
            desc = f"{g.name} B{g.batch} N{g.tokens} h{g.heads} d{g.head_dim}"
            out += [(desc, dn, ln) for ln in global_launches(g, dt)]
        for c in conv:
            for cl in ((False, True) if not c.fuse_ln else (False,)):
                desc = f"{c.name} B{c.batch} C{c.channels} {c.hw}x{c.hw} k{c.kernel}{' NHWC-mem' if cl else ''}"
                out += [(desc, dn, ln) for ln in conv_launches(c, dt, cl)]
    return out


def run(archs: List[int], subset: str, jobs: int, only: Optional[str] = None,
        log=print) -> Tuple[List[dict], List[str]]:
    rows, errors = [], []
    launches = collect(subset)
    if only:
        launches = [x for x in launches if re.search(only, f"{_name(x[2].kernel)} {x[0]} {x[1]}")]
    pending: Dict[str, int] = {}
    plan = []  # (row template, job index)
    for shape, dn, ln in launches:
        for arch in archs:
            with _target(arch):  # prunes that ask the driver for the target see this arch
                fn, configs = _configs(ln.kernel, ln.args, ln.kwargs)
            for cname, kw in configs:
                job = Job(fn, ln.args, kw, arch)
                key = _spec_key(job)
                if key not in pending:
                    pending[key] = len(_JOBS)
                    _JOBS.append(job)
                plan.append((dict(kernel=fn.__name__, shape=shape, dtype=dn, config=cname, arch=arch,
                                  triton=triton.__version__), pending[key]))
    log(f"{len(plan)} rows, {len(_JOBS)} distinct compiles for sm_{','.join(map(str, archs))} "
        f"(triton {triton.__version__})")
    t0 = time.time()
    results = {}
    if jobs > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(jobs) as pool:
            for i, res, err in pool.imap_unordered(_run_job, range(len(_JOBS))):
                results[i] = (res, err)
    else:
        for i in range(len(_JOBS)):
            _, res, err = _run_job(i)
            results[i] = (res, err)
    log(f"compiled in {time.time() - t0:.0f} s")
    for tmpl, i in plan:
        res, err = results[i]
        if err:
            errors.append(f"{tmpl['kernel']} {tmpl['shape']} {tmpl['dtype']} {tmpl['config']} sm_{tmpl['arch']}: {err}")
            continue
        row = dict(tmpl)
        row.update(res)
        rows.append({k: row[k] for k in KEYS})
    return rows, errors


def table(rows: List[dict]) -> str:
    head = ("kernel", "shape", "dtype", "config", "arch", "regs", "stack", "smem", "warps/SM", "TC")
    body = [(r["kernel"].lstrip("_").replace("window_attention_", "wa_"), r["shape"], r["dtype"], r["config"],
             f"sm_{r['arch']}", str(r["registers"]), str(r["stack_bytes"]), str(r["shared_bytes"]),
             str(r["warps_per_sm"]), "yes" if r["tensor_cores"] else "no") for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*b) for b in body])


def _families(rows):
    return sorted({(r["kernel"], r["arch"], r["triton"]) for r in rows}, key=lambda x: (x[0], -x[1], x[2]))


def best_swin_t_forward(rows: List[dict], triton_version: str) -> Optional[dict]:
    """The Swin-T stage-1 shifted forward (bf16, sm_90) config with the most warps per SM."""
    s1 = [r for r in rows if r["kernel"] == "_window_attention_fwd_kernel" and r["dtype"] == "bf16"
          and r["shape"].startswith("swin_t-224-s1-shift ") and r["arch"] == 90 and r["triton"] == triton_version]
    return max(s1, key=lambda r: (r["warps_per_sm"], -r["registers"])) if s1 else None


def summary(rows: List[dict]) -> str:
    """Markdown: worst case per kernel family, arch and triton version; the best Swin-T forward."""
    lines = ["| kernel | arch | triton | rows | max registers | max stack B | max shared B | min warps/SM "
             "| tensor cores |", "|---|---|---|---|---|---|---|---|---|"]
    for k, a, t in _families(rows):
        rs = [r for r in rows if (r["kernel"], r["arch"], r["triton"]) == (k, a, t)]
        tc = {r["tensor_cores"] for r in rs}
        lines.append(f"| `{k.strip('_')}` | sm_{a} | {t} | {len(rs)} | {max(r['registers'] for r in rs)} | "
                     f"{max(r['stack_bytes'] for r in rs)} | {max(r['shared_bytes'] for r in rs)} | "
                     f"{min(r['warps_per_sm'] for r in rs)} | "
                     f"{'yes' if tc == {True} else 'no' if tc == {False} else 'some'} |")
    for t in sorted({r["triton"] for r in rows}):
        best = best_swin_t_forward(rows, t)
        if best:
            lines.append("")
            lines.append(f"Swin-T stage-1 shifted forward, bf16, sm_90, triton {t}, best config `{best['config']}`: "
                         f"{best['registers']} registers, {best['stack_bytes']} B stack, {best['shared_bytes']} B "
                         f"shared, {best['warps_per_sm']} warps/SM, tensor cores "
                         f"{'yes' if best['tensor_cores'] else 'no'}.")
    return "\n".join(lines)


README_MARKERS = ("<!-- kernel-resources -->", "<!-- /kernel-resources -->")
_GENERATED = ("<!-- generated: python benchmarks/kernel_resources.py --write-readme "
              "benchmarks/results/kernel_resources_triton-*.json -->")


def write_readme(rows: List[dict], readme: str) -> None:
    """Replace the generated table inside the README's kernel-resources section (text above it stays)."""
    with open(readme) as f:
        text = f.read()
    start, end = text.index(README_MARKERS[0]), text.index(README_MARKERS[1])
    section = text[start:end]
    keep = section[:section.index(_GENERATED)] if _GENERATED in section else section + "\n"
    body = keep + _GENERATED + "\n\n" + summary(rows) + "\n"
    with open(readme, "w") as f:
        f.write(text[:start] + body + text[end:])


def load(paths: List[str]) -> List[dict]:
    rows = []
    for p in paths:
        with open(p) as f:
            rows += json.load(f)["rows"]
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="90", help="comma-separated SM versions, e.g. 90,80")
    p.add_argument("--json", help="write {meta, rows} JSON to this file")
    p.add_argument("--subset", choices=("full", "ci"), default="full")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles")
    p.add_argument("--only", help="regex on 'kernel shape dtype': compile only the matching launches")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--summarize", nargs="+", metavar="JSON", help="print the summary of saved reports, compile nothing")
    p.add_argument("--write-readme", nargs="+", metavar="JSON",
                   help="write the summary of saved reports into the README's kernel-resources section")
    a = p.parse_args(argv)
    if a.summarize or a.write_readme:
        rows = load(a.summarize or a.write_readme)
        if a.write_readme:
            write_readme(rows, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md"))
        print(summary(rows))
        return 0
    archs = [int(x) for x in a.arch.split(",")]
    rows, errors = run(archs, a.subset, a.jobs, a.only)
    if not a.quiet:
        print(table(rows))
    print(summary(rows))
    if a.json:
        args = " ".join(argv if argv is not None else sys.argv[1:])
        meta = dict(triton=triton.__version__, torch=torch.__version__, archs=archs, subset=a.subset,
                    command=f"python benchmarks/kernel_resources.py {args}", date=time.strftime("%Y-%m-%d"))
        with open(a.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)
            f.write("\n")
    for e in errors:
        print("COMPILE ERROR:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
