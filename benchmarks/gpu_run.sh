#!/usr/bin/env bash
# One command for a GPU session: build, test, sanitize, benchmark; logs and JSON go to OUTDIR.
#
#   bash benchmarks/gpu_run.sh OUTDIR [build|test|sanitize|bench|all ...]
#
# Steps (default: all, in this order; each is short enough for a 10-minute device call):
#   build     build fastwin._C with CUDA in place (setup.py), then check the JIT path loads
#   test      the whole test suite on the GPU (triton and cuda backends included)
#   sanitize  compute-sanitizer memcheck / racecheck / synccheck / initcheck on the CUDA attention kernels
#   bench     pytest benchmarks --benchmark-only (full shapes), JSON named by device and date
# Afterwards copy OUTDIR/*.json into benchmarks/results/ and run
#   python benchmarks/make_table.py --write-readme benchmarks/results/*.json   (updates the README tables)
set -uo pipefail
OUT=${1:?usage: gpu_run.sh OUTDIR [steps]}
shift
STEPS=${*:-build test sanitize bench}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
DEVICE=$(python -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '_'))" 2>/dev/null || echo cpu)
STAMP=$(date -u +%Y-%m-%d)
status=0
{ nvidia-smi; python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; } > "$OUT/env.txt" 2>&1

for step in $STEPS; do
  echo "== $step" | tee -a "$OUT/steps.log"
  case $step in
    build)
      python setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || status=1
      python -m fastwin info | tee "$OUT/info.txt"
      python -c "import fastwin.backend.extension as e; print(e.__name__, 'loaded')" >> "$OUT/info.txt" 2>&1
      ;;
    test)
      timeout 560 python -m pytest tests -q -x -p no:cacheprovider --junitxml="$OUT/tests.xml" > "$OUT/tests.log" 2>&1 || status=1
      tail -5 "$OUT/tests.log"
      ;;
    sanitize)
      # The CUDA attention kernels on small shapes that reach every path: resident and streaming
      # modes, multi-group backward slots, padding (both orders), masks, a fully masked row, d = 128.
      # memcheck: out-of-bounds / misaligned accesses; racecheck: shared-memory races (cp.async
      # double buffering); synccheck: barrier misuse; initcheck: reads of never-written global memory.
      SAN_K="(shifted_window_attention_modes and bfloat16) or fully_masked_row or (window_attention and streaming and random and bfloat16)"
      for tool in memcheck racecheck synccheck initcheck; do
        timeout 140 compute-sanitizer --tool $tool --error-exitcode 9 \
          python -m pytest tests/test_cuda_attention.py -q -k "$SAN_K" -p no:cacheprovider > "$OUT/sanitize-$tool.log" 2>&1 || status=1
        tail -3 "$OUT/sanitize-$tool.log"
      done
      ;;
    bench)
      timeout 580 python -m pytest benchmarks --benchmark-only -q -p no:cacheprovider \
        --benchmark-json="$OUT/bench-${DEVICE}-${STAMP}.json" --benchmark-group-by=group > "$OUT/bench.log" 2>&1 || status=1
      tail -40 "$OUT/bench.log"
      ;;
    *) echo "unknown step $step"; status=2 ;;
  esac
done
exit $status
