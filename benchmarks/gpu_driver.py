"""The driver of `benchmarks/gpu_run.sh`: phases under one wall-clock deadline, at most 8 result files.

A GPU session has 15 minutes of device time, at most 10 minutes a command and 8 files coming back.
So one command runs its phases in order, each as a subprocess whose timeout is its cap or what is left
of the deadline, whichever is smaller; a phase that overruns is killed (with its process group) and
the next one still gets the time that is left. Each phase's Python rewrites its JSON after every row
(`RowWriter`), so a cut loses at most the row in progress. `summary.json` (planned and used seconds,
status of every phase) is rewritten after every phase.

Stdlib only: it runs before anything is built and its budgeting is tested on CPU with fake phases.

    python benchmarks/gpu_driver.py OUTDIR [PHASE ...] [--budget-s 540] [--dry-run]

`--dry-run` (the CPU rehearsal) runs every phase's Python up to its first CUDA call and reports the
planned seconds per phase.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from typing import Callable, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MAX_FILES = 8  # files a device command may bring back
DEADLINE_ENV = "FASTWIN_GPU_DEADLINE"  # epoch seconds a phase's own rows must finish by
DEFAULT_BUDGET_S = 540.0  # 9 minutes: a device command may run 10
SECOND_BUDGET_S = 230.0  # the second command: what is left of 15 minutes after the first and two starts
WRAP_UP_S = 5.0  # kept back for the summary and the file bundling
MIN_PHASE_S = 8.0  # a phase with less time than this left is skipped, not started
LOG = "run.log"
SUMMARY = "summary.json"
BUNDLE = "extra.tar.gz"


@dataclasses.dataclass(frozen=True)
class Phase:
    """One step of a run: `argv(outdir, dry_run)` is the command; `cap_s` the most it may take."""

    name: str
    cap_s: float
    argv: Callable[[str, bool], List[str]]
    what: str


def _py(*args) -> Callable[[str, bool], List[str]]:
    def argv(outdir, dry_run):
        return [sys.executable, os.path.join(HERE, "gpu_phases.py"), *args, outdir] + (["--dry-run"] if dry_run else [])

    return argv


def _sh(script: str) -> Callable[[str, bool], List[str]]:
    def argv(outdir, dry_run):
        return ["bash", "-c", script, "phase", outdir, "1" if dry_run else "0"]

    return argv


# The build: skipped when fastwin/_C*.so was built from the current sources and has CUDA kernels (a warm
# machine's second command); strict, so a compile error fails the phase instead of warning.
_BUILD = r"""
set -euo pipefail
out=$1; dry=$2
if [ "$dry" = 1 ]; then
  echo "dry run: would run FASTWIN_REQUIRE_CUDA=1 python setup.py build_ext --inplace (MAX_JOBS=${MAX_JOBS:-auto})"
  exec python -c "import sys; sys.path.insert(0, 'csrc'); import torch, build_config as b, cuda_toolkit as t; \
tk = t.find_toolkit(); print('toolkit', tk, '| reason no CUDA:', b.cuda_unavailable_reason(torch, tk), \
'| arch list', b.default_arch_list(torch), '| wheel headers', t.host_include_flags(tk, torch.__path__[0]) if tk else None)"
fi
if python benchmarks/gpu_phases.py fresh "$out"; then echo "fastwin._C is current and has CUDA kernels: build skipped"; exit 0; fi
FASTWIN_REQUIRE_CUDA=1 python setup.py build_ext --inplace 2>&1 | tail -n 40
python benchmarks/gpu_phases.py stamp "$out"
"""

# compute-sanitizer on small CUDA cases that reach every kernel path (resident and streaming modes,
# multi-group backward slots, both padding orders, masks, a fully masked row).
SANITIZE_K = ("(shifted_window_attention_modes and bfloat16) or fully_masked_row or "
              "(window_attention and streaming and random and bfloat16)")

PHASES: Dict[str, Phase] = {p.name: p for p in (
    Phase("env", 15, _py("env"), "nvidia-smi, versions, compute-sanitizer presence -> env.json"),
    Phase("build", 150, _sh(_BUILD), "FASTWIN_REQUIRE_CUDA=1 build of fastwin._C for the visible GPU's arch"),
    Phase("check", 20, _py("check"), "CUDA kernels registered for every op; the .so copied into OUTDIR"),
    Phase("tests", 75, _py("tests"), "tests/test_cuda_attention.py (one autotune config) -> tests.xml"),
    Phase("correctness", 90, _py("correctness"),
          "triton and cuda vs the fp64 reference, fwd + every gradient, bf16 then fp16 -> correctness.json"),
    Phase("kernels", 100, _py("kernels"), "Swin-T stage-1 attention b128 bf16 timings -> kernels.json"),
    Phase("models", 240, _py("models"), "Swin-T b128 224 bf16 inference and training step -> models.json"),
    Phase("sanitize", 200, _py("sanitize"), "compute-sanitizer memcheck/racecheck/synccheck -> sanitize.json"),
)}
FIRST_COMMAND = ("env", "build", "check", "tests", "correctness", "kernels", "models")
SECOND_COMMAND = ("env", "build", "sanitize")


class RowWriter:
    """A JSON file `{"meta": ..., "rows": [...]}` rewritten (atomically) after every added row."""

    def __init__(self, path: str, meta: Optional[dict] = None):
        self.path, self.meta, self.rows = path, dict(meta or {}), []
        self.write()

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.write()

    def write(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump({"meta": self.meta, "rows": self.rows}, handle, indent=1, default=str)
        os.replace(tmp, self.path)


def seconds_left(default: float = float("inf")) -> float:
    """Seconds until this phase's deadline ($FASTWIN_GPU_DEADLINE), `default` without one."""
    deadline = os.environ.get(DEADLINE_ENV)
    return float(deadline) - time.time() if deadline else default


def plan(names: Sequence[str], budget_s: float, phases: Dict[str, Phase] = PHASES) -> List[dict]:
    """Planned start/end of each phase if each used its whole cap, cut at the budget."""
    rows, t = [], 0.0
    for name in names:
        limit = max(0.0, min(phases[name].cap_s, budget_s - WRAP_UP_S - t))
        rows.append({"phase": name, "planned_start_s": round(t, 1), "planned_s": round(limit, 1),
                     "what": phases[name].what})
        t += limit
    return rows


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_phase(phase: Phase, outdir: str, dry_run: bool, deadline: float, log) -> dict:
    """Run one phase with timeout min(cap, time left); its output is appended to `log`."""
    left = deadline - WRAP_UP_S - time.time()
    limit = min(phase.cap_s, left)
    row = {"phase": phase.name, "limit_s": round(limit, 1)}
    if limit < MIN_PHASE_S:
        row.update(status="skipped: no time left", used_s=0.0)
        return row
    log.write(f"\n===== {phase.name} (limit {limit:.0f} s): {phase.what}\n")
    log.flush()
    env = dict(os.environ, **{DEADLINE_ENV: str(time.time() + limit), "PYTHONUNBUFFERED": "1"})
    start = time.time()
    proc = subprocess.Popen(phase.argv(outdir, dry_run), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        rc = proc.wait(timeout=limit)
        row["status"] = "ok" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.wait()
        row["status"] = "cut at its time limit"
    finally:
        _kill_group(proc)  # grandchildren (compilers, pytest workers) go with it
    row["used_s"] = round(time.time() - start, 1)
    log.write(f"===== {phase.name}: {row['status']} after {row['used_s']} s\n")
    log.flush()
    return row


def bundle_extra_files(outdir: str, keep: Sequence[str], max_files: int = MAX_FILES) -> List[str]:
    """If OUTDIR holds more than `max_files` files, pack all but `keep` into one tar (returns what was packed)."""
    files = sorted(f for f in os.listdir(outdir) if os.path.isfile(os.path.join(outdir, f)) and f != BUNDLE)
    if len(files) <= max_files:
        return []
    extra = [f for f in files if f not in keep]
    with tarfile.open(os.path.join(outdir, BUNDLE), "w:gz") as tar:
        for f in extra:
            tar.add(os.path.join(outdir, f), arcname=f)
    for f in extra:
        os.remove(os.path.join(outdir, f))
    return extra


def drive(outdir: str, names: Sequence[str], budget_s: float = DEFAULT_BUDGET_S, dry_run: bool = False,
          phases: Dict[str, Phase] = PHASES) -> dict:
    """Run `names` in order within `budget_s`; returns (and writes) the summary."""
    os.makedirs(outdir, exist_ok=True)
    start = time.time()
    deadline = start + budget_s
    summary = {"command": list(names), "dry_run": dry_run, "budget_s": budget_s,
               "plan": plan(names, budget_s, phases), "phases": []}
    path = os.path.join(outdir, SUMMARY)
    RowWriter(path, summary)  # the plan is there even if the machine goes away in the first phase
    with open(os.path.join(outdir, LOG), "a") as log:
        log.write(f"fastwin gpu run {'(dry run) ' if dry_run else ''}phases {' '.join(names)}, budget {budget_s:.0f} s\n")
        for row in summary["plan"]:
            log.write(f"  planned {row['phase']:<12} {row['planned_s']:6.1f} s  {row['what']}\n")
        log.flush()
        for name in names:
            summary["phases"].append(run_phase(phases[name], outdir, dry_run, deadline, log))
            RowWriter(path, summary)
        summary["total_s"] = round(time.time() - start, 1)
        summary["bundled"] = bundle_extra_files(outdir, keep=(LOG, SUMMARY) + tuple(_result_files(outdir)))
        RowWriter(path, summary)
        log.write(f"done in {summary['total_s']} s: " +
                  ", ".join(f"{p['phase']} {p['status']}" for p in summary["phases"]) + "\n")
    return summary


def _result_files(outdir: str) -> List[str]:
    """The files a run means to bring back, in priority order (the rest may be bundled)."""
    wanted = ["env.json", "correctness.json", "kernels.json", "models.json", "sanitize.json", "tests.xml"]
    wanted += sorted(f for f in os.listdir(outdir) if f.endswith(".so"))
    return [f for f in wanted if os.path.exists(os.path.join(outdir, f))][: MAX_FILES - 3]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("phases", nargs="*", help=f"default: {' '.join(FIRST_COMMAND)}; 'second': "
                        f"{' '.join(SECOND_COMMAND)}; any of {', '.join(PHASES)}")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"wall-clock budget (default {DEFAULT_BUDGET_S:.0f}; 'second': {SECOND_BUDGET_S:.0f})")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    names = list(args.phases) or list(FIRST_COMMAND)
    budget = DEFAULT_BUDGET_S if args.budget_s is None else args.budget_s
    if names == ["second"]:
        names = list(SECOND_COMMAND)
        budget = SECOND_BUDGET_S if args.budget_s is None else args.budget_s
    unknown = [n for n in names if n not in PHASES]
    if unknown:
        parser.error(f"unknown phase(s) {unknown}; known: {', '.join(PHASES)}")
    summary = drive(args.outdir, names, budget, args.dry_run)
    print(json.dumps({p["phase"]: p["status"] for p in summary["phases"]}, indent=1))
    return 0 if all(p["status"] == "ok" for p in summary["phases"]) else 1


if __name__ == "__main__":
    sys.exit(main())
