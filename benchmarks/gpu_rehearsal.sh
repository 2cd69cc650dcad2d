#!/usr/bin/env bash
# A rehearsal of the first GPU run on a CPU machine, with the GPU image's software stack (README: "GPU runs").
#
#   bash benchmarks/gpu_rehearsal.sh [WORKDIR]
#
# 1. a venv with torch==2.11.0 (the CUDA 13 build from the registry, with its nvidia-* CUDA library
#    wheels: several GB, which is why CI does not run this), triton==3.6.0, numpy<2.3 and the test tools;
#    FASTWIN_REHEARSAL_VENV=/path/to/venv reuses such a venv instead (read-only: a thin venv in WORKDIR
#    sees its packages through a .pth file, so nothing is installed into it);
# 2. a fresh clone of this repository's HEAD (commit first: uncommitted changes are not rehearsed);
# 3. FASTWIN_REQUIRE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 pip install --no-build-isolation -e . with no
#    CUDA_HOME or include path set (needs a CUDA toolkit's nvcc; ~30-60 min on 2 busy cores);
# 4. checks that fastwin_C has CUDA kernels for every attention op;
# 5. the same install with a deliberately broken .cu file must fail (FASTWIN_REHEARSAL_BROKEN=0 skips it);
# 6. the Triton test files (interpreter) and the CUDA-emulation tests;
# 7. bash benchmarks/gpu_run.sh --dry-run: every phase's Python up to its first CUDA call, planned seconds.
# The log goes to benchmarks/results/gpu_rehearsal-<date>.log of the checkout this script is in.
# MAX_JOBS (default 2) sets the compile jobs. Exit status 0 only if every step passed.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d /tmp/fastwin-rehearsal.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
LOG="$REPO/benchmarks/results/gpu_rehearsal-$(date -u +%Y-%m-%d).log"
export MAX_JOBS=${MAX_JOBS:-2}
# JIT builds (the CUDA-emulation module) go to WORKDIR: the default ~/.cache/fastwin holds builds
# against another torch, which the rehearsal must neither reuse nor overwrite.
export FASTWIN_CACHE_DIR="$WORK/cache"
: > "$LOG"
failures=0
say() { echo "$*" | tee -a "$LOG"; }
step() { say ""; say "== $(date -u +%H:%M:%S) $*"; }
verdict() {  # verdict NAME RC [expected-rc-kind]: records PASS/FAIL
    if [ "$2" = 0 ]; then say "PASS $1"; else say "FAIL $1 (exit $2)"; failures=$((failures + 1)); fi
}
# A command's output in full to WORKDIR/NAME.log, its last lines into the rehearsal log.
logged() {  # logged NAME TAIL_LINES CMD...
    local name=$1 lines=$2; shift 2
    local start=$SECONDS
    "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    tail -n "$lines" "$WORK/$name.log" | cut -c1-400 >> "$LOG"
    say "($name: exit $rc after $((SECONDS - start)) s; full output $WORK/$name.log)"
    return $rc
}

step "venv"
VENV="$WORK/venv"
if [ -n "${FASTWIN_REHEARSAL_VENV:-}" ]; then
    base_site=$("$FASTWIN_REHEARSAL_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    [ -x "$VENV/bin/python" ] || "$FASTWIN_REHEARSAL_VENV/bin/python" -m venv --without-pip "$VENV"
    site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    echo "$base_site" > "$site/_fastwin_rehearsal_base.pth"
    say "thin venv $VENV over $FASTWIN_REHEARSAL_VENV ($base_site)"
else
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    # Pinned: an unpinned torch would resolve to the newest (CPU or CUDA) wheel, not the GPU image's.
    logged pip-install 3 "$VENV/bin/python" -m pip install torch==2.11.0 triton==3.6.0 "numpy<2.3" wheel setuptools \
        ninja pybind11 pytest pytest-benchmark expecttest || { verdict venv 1; exit 1; }
fi
PY="$VENV/bin/python"
"$PY" -c "import sys, torch, triton, numpy; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.version.cuda, 'triton', triton.__version__, 'numpy', numpy.__version__)" 2>&1 | tee -a "$LOG"
"$PY" -c "import torch, triton; assert torch.__version__.startswith('2.11.0') and torch.version.cuda, torch.__version__; \
assert triton.__version__.startswith('3.6'), triton.__version__"
verdict "venv has torch 2.11.0 (CUDA build) and triton 3.6" $?
say "nvcc on PATH: $(command -v nvcc || echo none); CUDA_HOME=${CUDA_HOME:-unset}; CUDA_PATH=${CUDA_PATH:-unset}"

step "fresh clone of $REPO"
rm -rf "$WORK/src"
git clone -q "$REPO" "$WORK/src" && git -C "$WORK/src" log -1 --format="commit %H %s" | tee -a "$LOG"
cd "$WORK/src" || exit 1

# The broken-source build and the test runs need no result of the strict build: they run alongside it
# (in their own clone / on the Triton and emulation paths), each logging to WORKDIR/<name>.log.
strict_install() {
    env -u CUDA_HOME -u CUDA_PATH -u CPATH -u CPLUS_INCLUDE_PATH FASTWIN_REQUIRE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 \
        "$PY" -m pip install --no-build-isolation --no-deps -v -e .
}

if [ "${FASTWIN_REHEARSAL_BROKEN:-1}" = 1 ]; then
    rm -rf "$WORK/broken" && git clone -q "$REPO" "$WORK/broken"
    victim=$(ls "$WORK"/broken/csrc/cuda/*.cu | head -n 1)
    printf '#error "deliberately broken by gpu_rehearsal.sh"\n' | cat - "$victim" > "$victim.new" && mv "$victim.new" "$victim"
    say "broken clone: $(basename "$victim") starts with #error; its strict install runs in the background"
    (cd "$WORK/broken" && start=$SECONDS && strict_install > "$WORK/broken-build.log" 2>&1; \
     echo "exit $? after $((SECONDS - start)) s" >> "$WORK/broken-build.log") &
    broken_pid=$!
fi
# The compile test runs beside the build on the same cores: it gets an hour, not CI's 20 minutes.
( start=$SECONDS; FASTWIN_COMPILE_TIMEOUT_S=${FASTWIN_COMPILE_TIMEOUT_S:-3600} "$PY" -m pytest -q -p no:cacheprovider tests/test_triton_attention.py \
    tests/test_triton_attention_defects.py tests/test_triton_dwconv.py tests/test_triton_compile.py \
    > "$WORK/triton-tests.log" 2>&1; echo "exit $? after $((SECONDS - start)) s" >> "$WORK/triton-tests.log"
  start=$SECONDS; "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_emulation.py tests/test_gpu_run.py \
    > "$WORK/emulation-tests.log" 2>&1; echo "exit $? after $((SECONDS - start)) s" >> "$WORK/emulation-tests.log" ) &
tests_pid=$!

step "strict install: FASTWIN_REQUIRE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 pip install --no-build-isolation -e . (MAX_JOBS=$MAX_JOBS)"
logged build 4 strict_install
rc=$?
grep -m1 -o "using CUDA_HOME='[^']*'" "$WORK/build.log" | tee -a "$LOG"
grep -m1 -o -- "-idirafter [^ ]*" "$WORK/build.log" | tee -a "$LOG"
verdict "strict install exits 0" $rc

step "CUDA kernels registered in torch.ops.fastwin_C"
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import torch
import fastwin  # noqa: F401
from fastwin.backend import extension
assert extension.load_cpu() is None, extension.load_cpu()
ops = ["shifted_window_attention_fwd", "shifted_window_attention_bwd", "window_attention_fwd", "window_attention_bwd",
       "attention_fwd", "attention_bwd", "dwconv2d_fwd", "dwconv2d_bwd", "linear_gelu_fwd", "linear_gelu_bwd"]
has = {op: torch._C._dispatch_has_kernel_for_dispatch_key(f"fastwin_C::{op}", "CUDA") for op in ops}
for op, ok in has.items():
    print(f"  fastwin_C::{op}: CUDA kernel {'yes' if ok else 'no'}")
missing = [op for op in ops[:6] if not has[op]]
print("from", fastwin._C.__file__)
raise SystemExit(f"attention ops without a CUDA kernel: {missing}" if missing else 0)
EOF
verdict "every attention op has a CUDA kernel" "${PIPESTATUS[0]}"

if [ -n "${broken_pid:-}" ]; then
    step "a deliberately broken CUDA source must fail the strict install"
    wait "$broken_pid"
    grep -m1 "deliberately broken" "$WORK/broken-build.log" | cut -c1-300 | tee -a "$LOG"
    tail -n 3 "$WORK/broken-build.log" | cut -c1-300 >> "$LOG"
    rc=$(tail -n 1 "$WORK/broken-build.log" | awk '{print $2}')
    [ "$rc" != 0 ] && grep -q "deliberately broken" "$WORK/broken-build.log"
    verdict "strict install of the broken source fails (exit $rc, full output $WORK/broken-build.log)" $?
    rm -rf "$WORK/broken"
fi

step "Triton tests (interpreter) and CUDA-emulation tests under torch 2.11 + triton 3.6"
wait "$tests_pid"
for name in triton-tests emulation-tests; do
    tail -n 4 "$WORK/$name.log" | cut -c1-300 >> "$LOG"
    rc=$(tail -n 1 "$WORK/$name.log" | awk '{print $2}')
    verdict "$name (full output $WORK/$name.log)" "$rc"
done

for command in first second; do
    step "gpu_run.sh --dry-run ($command command)"
    rm -rf "$WORK/dry-$command"
    args=(); [ "$command" = second ] && args=(second)
    PATH="$VENV/bin:$PATH" bash benchmarks/gpu_run.sh "$WORK/dry-$command" "${args[@]}" --dry-run \
        > "$WORK/dry-$command.out" 2>&1
    rc=$?
    grep -E "^fastwin gpu run|^  planned|^=====|^dry run|^[0-9]+ rows|^toolkit|^done in" "$WORK/dry-$command/run.log" \
        | cut -c1-300 >> "$LOG"
    n=$(ls "$WORK/dry-$command" | wc -l)
    say "OUTDIR files ($n, at most 8): $(ls "$WORK/dry-$command" | tr '\n' ' ')"
    [ "$n" -le 8 ] || rc=1
    verdict "dry run of the $command command: every phase ok" $rc
done

step "done"
if [ "$failures" = 0 ]; then say "REHEARSAL PASSED"; else say "REHEARSAL FAILED: $failures step(s)"; fi
say "log: $LOG"
[ "$failures" = 0 ]
