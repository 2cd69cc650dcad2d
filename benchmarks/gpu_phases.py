"""The Python of the GPU run's phases (`benchmarks/gpu_driver.py` runs each as a subprocess).

    python benchmarks/gpu_phases.py PHASE OUTDIR [--dry-run]

Every phase writes its JSON through `RowWriter` (rewritten after every row) and stops starting rows
when its deadline ($FASTWIN_GPU_DEADLINE, set by the driver) is near. `--dry-run` runs everything up
to the first CUDA call (imports, case lists, model construction on the CPU, baseline availability),
prints what it would run and exits 0: that is what the CPU rehearsal exercises.

Correctness phases set FASTWIN_TRITON_AUTOTUNE=0 (one Triton config per autotune key: one compile
instead of every candidate); the timing phases autotune as users do.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT, os.path.join(ROOT, "csrc")]

from gpu_driver import SANITIZE_K, RowWriter, seconds_left  # noqa: E402

ATTENTION_OPS = ("shifted_window_attention_fwd", "shifted_window_attention_bwd", "window_attention_fwd",
                 "window_attention_bwd", "attention_fwd", "attention_bwd")
OTHER_OPS = ("dwconv2d_fwd", "dwconv2d_bwd", "linear_gelu_fwd", "linear_gelu_bwd")
SWIN_T = "swin_tiny_patch4_window7_224"
CORRECTNESS_BATCH = 4  # the stage geometry at a small batch: the fp64 reference stays quick
ROW_MIN_S = 5.0  # do not start a row with less time than this left


class DryRun(Exception):
    """Raised where a phase would make its first CUDA call (the dry run stops there)."""


def _first_cuda_call(dry_run: bool, what: str):
    import torch

    if dry_run:
        raise DryRun(what)
    return torch.device("cuda")


def _update_json(path: str, key: str, value) -> None:
    """Add `key` to the meta of the RowWriter file at `path` (env.json holds the check too: 8 files at most)."""
    data = {"meta": {}, "rows": []}
    if os.path.exists(path):
        with open(path) as handle:
            data = json.load(handle)
    writer = RowWriter(path, dict(data["meta"], **{key: value}))
    writer.rows = data["rows"]
    writer.write()


def _run(argv, timeout=30):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        return (done.stdout + done.stderr).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"


def sanitizer_path():
    """compute-sanitizer on PATH or in the toolkit (it is not always installed)."""
    import cuda_toolkit

    found = shutil.which("compute-sanitizer")
    toolkit = cuda_toolkit.find_toolkit()
    for candidate in ([found] if found else []) + ([os.path.join(toolkit, "bin", "compute-sanitizer"),
                                                     os.path.join(toolkit, "compute-sanitizer", "compute-sanitizer")]
                                                    if toolkit else []):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


# ------------------------------------------------------------------------------------------ env / check

def env(outdir, dry_run):
    import torch
    import triton

    from timm_shim import import_timm

    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda, "triton": triton.__version__,
            "git": _run(["git", "-C", ROOT, "rev-parse", "HEAD"]),
            "nvidia_smi": _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                "--format=csv"]),
            "compute_sanitizer": sanitizer_path(), "timm": getattr(import_timm(), "__version__", None),
            "env": {k: v for k, v in os.environ.items() if k.startswith(("FASTWIN_", "TORCH_CUDA", "MAX_JOBS"))}}
    info["cuda_available"] = torch.cuda.is_available()
    if info["cuda_available"]:
        info["device"] = torch.cuda.get_device_name(0)
        info["capability"] = list(torch.cuda.get_device_capability(0))
    RowWriter(os.path.join(outdir, "env.json"), info)
    print(json.dumps(info, indent=1))


def _registered():
    import torch

    from fastwin.backend import extension

    why = extension.load_cpu()
    keys = {op: torch._C._dispatch_has_kernel_for_dispatch_key(f"fastwin_C::{op}", "CUDA") if why is None else False
            for op in ATTENTION_OPS + OTHER_OPS}
    return why, keys


def check(outdir, dry_run):
    """Every attention op has a CUDA kernel in the built fastwin._C (no GPU needed for this)."""
    why, keys = _registered()
    sos = sorted(glob.glob(os.path.join(ROOT, "fastwin", "_C*.so")))
    for so in sos:
        shutil.copy2(so, os.path.join(outdir, os.path.basename(so)))
    missing = [op for op in ATTENTION_OPS if not keys[op]]
    result = {"load_error": why, "cuda_kernels": keys, "missing": missing, "copied": [os.path.basename(s) for s in sos]}
    _update_json(os.path.join(outdir, "env.json"), "check", result)
    print(json.dumps(result, indent=1))
    if why or missing:
        raise SystemExit(f"fastwin._C: {why or 'no CUDA kernels for ' + ', '.join(missing)}")


STAMP = os.path.join(ROOT, "build", "fastwin_C.sources.sha256")  # build/ is git-ignored and kept between calls


def sources_digest() -> str:
    """SHA-256 of csrc/ and setup.py contents (not mtimes: a re-copied tree has new mtimes, same sources)."""
    import hashlib

    digest = hashlib.sha256()
    paths = sorted(glob.glob(os.path.join(ROOT, "csrc", "**", "*"), recursive=True)) + [os.path.join(ROOT, "setup.py")]
    for path in paths:
        if os.path.isfile(path) and "__pycache__" not in path:
            digest.update(os.path.relpath(path, ROOT).encode())
            with open(path, "rb") as handle:
                digest.update(handle.read())
    return digest.hexdigest()


def stamp(outdir, dry_run):
    """Record the sources the in-place fastwin._C was just built from."""
    os.makedirs(os.path.dirname(STAMP), exist_ok=True)
    with open(STAMP, "w") as handle:
        handle.write(sources_digest())


def fresh(outdir, dry_run):
    """Exit 0 when fastwin/_C*.so was built from the current sources and has the CUDA kernels (skip the build)."""
    if not glob.glob(os.path.join(ROOT, "fastwin", "_C*.so")) or not os.path.exists(STAMP):
        raise SystemExit(1)
    with open(STAMP) as handle:
        if handle.read().strip() != sources_digest():
            raise SystemExit(1)
    why, keys = _registered()
    if why or not all(keys[op] for op in ATTENTION_OPS):
        raise SystemExit(1)


# ------------------------------------------------------------------------------------------------ tests

def _pytest(args, extra_env=None, prefix=(), timeout=None):
    cmd = list(prefix) + [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"] + list(args)
    env_ = dict(os.environ, **(extra_env or {}))
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env_, timeout=timeout, check=False).returncode
    except subprocess.TimeoutExpired:
        return "timeout"


def tests(outdir, dry_run):
    args = ["tests/test_cuda_attention.py", "-q", "-rs"]
    if dry_run:
        rc = _pytest(args + ["--collect-only"])
    else:
        rc = _pytest(args + [f"--junitxml={os.path.join(outdir, 'tests.xml')}"], {"FASTWIN_TRITON_AUTOTUNE": "0"})
    collected_nothing = 5  # pytest's exit code when nothing was selected (a dry run's collection may do that)
    raise SystemExit(0 if rc == 0 or (dry_run and rc == collected_nothing) else 1)


def sanitize(outdir, dry_run):
    """compute-sanitizer memcheck / racecheck / synccheck on small CUDA cases (no caching allocator)."""
    tool_path = sanitizer_path()
    writer = RowWriter(os.path.join(outdir, "sanitize.json"), {"compute_sanitizer": tool_path, "k": SANITIZE_K})
    select = ["tests/test_cuda_attention.py", "-q", "-x", "-k", SANITIZE_K]
    if dry_run:
        print(f"dry run: compute-sanitizer {tool_path or 'MISSING (the GPU phase would record it and stop)'}")
        raise SystemExit(0 if _pytest(select + ["--collect-only"]) in (0, 5) else 1)
    if tool_path is None:
        writer.add({"tool": None, "status": "compute-sanitizer is not installed"})
        raise SystemExit(1)
    tools = ("memcheck", "racecheck", "synccheck")
    env_ = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1", "FASTWIN_TRITON_AUTOTUNE": "0"}
    for i, tool in enumerate(tools):
        budget = seconds_left(600) / (len(tools) - i)
        start = time.time()
        rc = _pytest(select, env_, prefix=[tool_path, "--tool", tool, "--error-exitcode", "9"], timeout=budget)
        writer.add({"tool": tool, "exit": rc, "seconds": round(time.time() - start, 1),
                    "status": {0: "clean", 9: "sanitizer errors (see run.log)"}.get(rc, f"exit {rc}")})


# ------------------------------------------------------------------------------------------ correctness

def correctness_cases():
    """(case, dtypes) at every Swin-T stage, Swin-B 224/384 stage 1, UniFormer-S global attention and dwconv."""
    from shapes import conv_cases, global_cases, swin_cases

    from fastwin import testing

    b = CORRECTNESS_BATCH
    cases = [testing.swin_case(c.name, b, c.H, c.W, c.heads, c.head_dim, (c.window,) * 2, (c.shift,) * 2)
             for c in swin_cases("full")]
    cases += [testing.attention_case(c.name, b, c.tokens, c.heads, c.head_dim)
              for c in global_cases("full") if c.name.startswith("uniformer_s")]
    cases += [testing.dwconv_case(c.name, b, c.channels, c.H, c.W, c.kernel, residual=c.residual)
              for c in conv_cases("full") if c.name.startswith("uniformer_s-s1")]
    return cases


def correctness(outdir, dry_run):
    import torch

    from fastwin import testing

    os.environ["FASTWIN_TRITON_AUTOTUNE"] = "0"
    cases = correctness_cases()
    plan = [(dtype, case, backend) for dtype in (torch.bfloat16, torch.float16) for case in cases
            for backend in ("triton", "cuda")]
    print(f"{len(plan)} rows: {len(cases)} cases ({', '.join(c.name for c in cases)}) x triton, cuda x bf16, fp16")
    device = _first_cuda_call(dry_run, "correctness: first case.make on cuda")
    writer = RowWriter(os.path.join(outdir, "correctness.json"),
                       {"batch": CORRECTNESS_BATCH, "rule": "SPEC §6, vs fp64 reference", "planned_rows": len(plan)})
    failed = 0
    for dtype, case, backend in plan:
        if seconds_left() < ROW_MIN_S:
            writer.meta["cut"] = f"stopped before {case.name} {backend} {dtype}: deadline"
            writer.write()
            break
        row = {"case": case.name, "backend": backend, "dtype": str(dtype).replace("torch.", "")}
        start = time.time()
        try:
            why = testing.supported(case, backend, device, dtype)
            if why:
                row["skipped"] = why
            else:
                res = testing.run_case(case, backend, dtype, device)
                row.update(ok=res.ok, failures=res.failures, ran_on=res.ran_on,
                           errors={k: [float(e), float(bd)] for k, (e, bd) in res.errors.items()})
                failed += not res.ok
        except Exception as exc:  # record it, keep checking the rest
            row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
            failed += 1
        row["seconds"] = round(time.time() - start, 2)
        writer.add(row)
        print(json.dumps(row))
    raise SystemExit(1 if failed else 0)


# ----------------------------------------------------------------------------------------------- timings

def _copy_bandwidth(device):
    """Measured device copy GB/s (read + write) on 1 GiB: the roofline the kernels are compared with."""
    import torch

    src = torch.empty(2 ** 29, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize(device)
    start, n = time.perf_counter(), 20
    for _ in range(n):
        dst.copy_(src)
    torch.cuda.synchronize(device)
    return 2 * src.numel() * src.element_size() * n / (time.perf_counter() - start) / 1e9


def kernels(outdir, dry_run):
    """Swin-T stage-1 shifted-window attention, B=128, bf16, fwd and fwd+bwd, every implementation."""
    import torch
    from baselines import flex_available, window_impl
    from shapes import WindowCase

    from fastwin.bench import interleaved, ratio_spread

    case = WindowCase("swin_t-224-s1", 128, 56, 56, 3, 32, 7, 3)
    names = ["reference", "official_matmul", "reference+compile", "flex", "triton", "cuda"]
    print(f"{case}: {', '.join(names)} (reference = SDPA with the dense bias + shift mask), fwd then fwd+bwd")
    device = _first_cuda_call(dry_run, "kernels: inputs on cuda")
    import fastwin

    table = fastwin.backends()
    dtype = torch.bfloat16
    C = case.channels
    qkv = torch.randn(case.batch, case.H, case.W, 3 * C, device=device, dtype=dtype)
    rel = 0.5 * torch.randn((2 * case.window - 1) ** 2, case.heads, device=device, dtype=dtype)
    bias = 0.5 * torch.randn(3 * C, device=device, dtype=dtype)
    gout = torch.randn(case.batch, case.H, case.W, C, device=device, dtype=dtype)
    writer = RowWriter(os.path.join(outdir, "kernels.json"), {"case": str(case), "dtype": "bfloat16",
                                                               "copy_GBps": round(_copy_bandwidth(device), 1)})
    size = qkv.element_size()
    traffic = {"fwd": (qkv.numel() + gout.numel()) * size,  # read qkv, write out
               "fwd+bwd": (2 * qkv.numel() + 3 * gout.numel() + qkv.numel()) * size}  # + gout, out, qkv; write dqkv
    impls = {}
    for name in names:
        base = name.split("+")[0]
        why = flex_available(device) if name == "flex" else (None if base in ("reference", "official_matmul")
                                                             or table.get(base) else f"{base} backend unavailable")
        if why:
            writer.add({"impl": name, "skipped": why})
            continue
        impls[name] = window_impl(name, case, device)
    for mode in ("fwd", "fwd+bwd"):
        steps, first = {}, {}
        for name, fn in impls.items():
            if mode == "fwd":
                def step(i, fn=fn):
                    with torch.no_grad():
                        fn(qkv, rel, bias)
            else:
                leaves = [t.detach().requires_grad_() for t in (qkv, rel, bias)]

                def step(i, fn=fn, leaves=leaves):  # autograd.grad: no .grad accumulation inside the timing
                    torch.autograd.grad(fn(*leaves), leaves, gout, allow_unused=True)
            if seconds_left() < 30:
                writer.meta.setdefault("cut", []).append(f"{mode} {name}: deadline")
                break
            start = time.perf_counter()
            try:
                step(0)
                torch.cuda.synchronize(device)
                first[name] = round(time.perf_counter() - start, 2)
                steps[name] = step
            except Exception as exc:  # noqa: BLE001
                writer.add({"impl": name, "mode": mode, "error": f"{type(exc).__name__}: {exc}"[:300]})
        timed = interleaved(steps, device, rounds=10, warmup=2, min_sample_s=0.01)
        ref = timed.get("reference")
        for name, m in timed.items():
            row = {"impl": name, "mode": mode, "first_call_s": first.get(name), "median_ms": m.median * 1e3,
                   "times_ms": [t * 1e3 for t in m.times], "error": m.error,
                   "GBps": traffic[mode] / m.median / 1e9 if m.times else None}
            if ref is not None and ref.times and m.times:
                row["speedup_vs_reference"] = ratio_spread(ref.times, m.times)
            writer.add(row)
            print(json.dumps({k: v for k, v in row.items() if k != "times_ms"}))


def models(outdir, dry_run):
    """Whole Swin-T b128 224 bf16 inference and training step, every runner, img/s and peak memory."""
    import torch

    import fastwin
    from fastwin.bench import bench_model
    from timm_shim import import_timm

    names = ["reference", "reference+compile", "auto+compile", "triton", "cuda", "timm", "timm+compile"]
    timm = import_timm()
    print(f"{SWIN_T} b128 bf16 infer then train: {', '.join(names)}; timm "
          f"{'has' if timm is not None and SWIN_T in timm.list_models() else 'lacks'} {SWIN_T}")
    fastwin.create_model(SWIN_T)  # builds on the CPU: the model code runs up to .to(cuda)
    device = _first_cuda_call(dry_run, "models: model.to(cuda)")
    writer = RowWriter(os.path.join(outdir, "models.json"), {"model": SWIN_T, "batch": 128, "dtype": "bfloat16"})
    for train in (False, True):
        if seconds_left() < 60:
            writer.meta.setdefault("cut", []).append(f"{'train' if train else 'infer'}: deadline")
            writer.write()
            break
        for r in bench_model(SWIN_T, 128, torch.bfloat16, train, device, names=names, rounds=5, warmup=2,
                             progress=False):
            row = {"mode": "train" if train else "infer", "impl": r.name, "median_ms": r.seconds * 1e3,
                   "images_per_s": r.images_per_s, "peak_bytes": r.peak_bytes, "error": r.error,
                   "times_ms": [t * 1e3 for t in r.times]}
            writer.add(row)
            print(json.dumps({k: v for k, v in row.items() if k != "times_ms"}))


PHASES = {f.__name__: f for f in (env, check, fresh, stamp, tests, sanitize, correctness, kernels, models)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=sorted(PHASES))
    parser.add_argument("outdir")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    os.makedirs(args.outdir, exist_ok=True)
    start = time.time()
    try:
        PHASES[args.phase](args.outdir, args.dry_run)
    except DryRun as stop:
        print(f"dry run: {args.phase} stopped before its first CUDA call ({stop}) after {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
