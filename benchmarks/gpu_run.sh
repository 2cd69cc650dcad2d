#!/usr/bin/env bash
# One GPU command that brings back evidence within a 10-minute device call (README: "GPU runs").
#
#   bash benchmarks/gpu_run.sh OUTDIR [PHASE ...] [--dry-run] [--budget-s S]
#
# Default phases, under one 540 s deadline (each capped by its own limit and by what is left):
#   env -> build (FASTWIN_REQUIRE_CUDA=1, visible GPU's arch only) -> check (CUDA kernels registered,
#   .so copied to OUTDIR) -> tests (tests/test_cuda_attention.py) -> correctness (triton and cuda vs
#   fp64) -> kernels (Swin-T stage-1 attention timings) -> models (Swin-T b128 inference/training).
# Second command (<= 4 min): `gpu_run.sh OUTDIR2 second` = env build sanitize (compute-sanitizer), or
#   `gpu_run.sh OUTDIR2 env build models --budget-s 230` when the first command's models phase was cut.
# OUTDIR gets at most 8 files: run.log, summary.json, env.json, the fastwin._C .so, tests.xml,
#   correctness.json, kernels.json, models.json (sanitize.json in the second command).
# --dry-run (the CPU rehearsal, benchmarks/gpu_rehearsal.sh) runs each phase's Python up to its first
#   CUDA call and prints the planned seconds per phase.
set -uo pipefail
OUT=${1:?usage: gpu_run.sh OUTDIR [PHASE ...] [--dry-run] [--budget-s S]}
shift
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# The checkout itself is imported (fastwin/ and its in-place fastwin._C), not an installed copy.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
exec python benchmarks/gpu_driver.py "$OUT" "$@"
