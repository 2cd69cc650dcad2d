#!/usr/bin/env bash
# The GPU machine runs triton 3.6 (CI installs the newest triton). This recreates that pairing in a
# second venv (.venv36, git-ignored; torch==2.13.0 and triton==3.6.0 install together), then
#   1. writes the sm_90/sm_80 resource report for triton 3.6 (benchmarks/kernel_resources.py), and
#   2. runs the Triton test files under the interpreter with triton 3.6.
# About 45 minutes on 2 cores (the report compiles ~2000 kernel variants; reruns hit Triton's cache),
# which is why CI does not run it. Usage: benchmarks/triton36_check.sh [--no-report]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv36/bin/python ]; then
    python -m venv .venv36
    # numpy < 2.3: triton 3.6's interpreter turns 1-element arrays into Python ints, which numpy 2.3 refuses
    .venv36/bin/pip install -q torch==2.13.0 triton==3.6.0 "numpy<2.3" pytest expecttest
fi
.venv36/bin/python -c "import triton; assert triton.__version__.startswith('3.6'), triton.__version__"
if [ "${1:-}" != "--no-report" ]; then
    .venv36/bin/python benchmarks/kernel_resources.py --arch 90,80 --quiet \
        --json benchmarks/results/kernel_resources_triton-3.6.0.json
fi
.venv36/bin/python -m pytest -q tests/test_triton_attention.py tests/test_triton_attention_defects.py \
    tests/test_triton_dwconv.py tests/test_triton_compile.py
