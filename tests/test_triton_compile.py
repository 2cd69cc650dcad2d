"""Ahead-of-time compile of a representative subset of the Triton kernels for sm_80 and sm_90 (no GPU).

Runs `benchmarks/kernel_resources.py --subset ci` in a fresh process: there the kernels are JIT
functions (not the interpreter's) and the autotune prunes see the GPU path, exactly as on a GPU.
The subset covers the window-attention forward, dq, dkdv, dense-bias and table-gradient kernels
(Swin-T stage 1 and Swin-B 384 stage 1, shifted, bf16; fp32 at Swin-T in map mode, and fp32 dq at
Swin-B 384, whose several key blocks take a pre-Hopper entry of the tile table), global
attention (UniFormer-S stage 3) and the depthwise conv and conv + LayerNorm kernels. Fails on any
compile error and on any kept config that spills on sm_90 (sm_80: more than 16 bytes).
"""
import json
import os
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")

_SM80_STACK_ALLOWANCE = 16  # bytes
# The subset takes minutes on 2 quiet cores; a loaded machine (the GPU rehearsal runs it beside a CUDA
# build, and triton 3.6 compiles more slowly) may give it longer.
_TIMEOUT_S = float(os.environ.get("FASTWIN_COMPILE_TIMEOUT_S", "1200"))

EXPECTED = {
    "_window_attention_fwd_kernel", "_window_attention_bwd_dq_kernel", "_window_attention_bwd_dkdv_kernel",
    "_window_attention_dense_bias_kernel", "_window_attention_table_grad_kernel", "_dwconv2d_fwd_kernel",
    "_dwconv2d_bwd_wgrad_kernel", "_dwconv_layernorm_fwd_kernel", "_dwconv_layernorm_bwd_ln_kernel",
}


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(_BIN), reason="this triton wheel ships no NVIDIA toolchain")
def test_kernels_compile_for_sm80_and_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "rows.json"
    res = subprocess.run([sys.executable, os.path.join("benchmarks", "kernel_resources.py"), "--subset", "ci",
                          "--arch", "80,90", "--json", str(out), "--quiet"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=_TIMEOUT_S)
    assert res.returncode == 0, f"compile errors:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    rows = json.loads(out.read_text())["rows"]
    assert EXPECTED <= {r["kernel"] for r in rows}, "a kernel family was not compiled"
    assert {r["arch"] for r in rows} == {80, 90}
    # sm_90 (the tables' target): no kept config may spill at all. sm_80 builds of the same configs
    # (mma.sync needs more registers than wgmma) may keep a word or two of stack, never more.
    spills = [f"{r['kernel']} {r['shape']} {r['dtype']} {r['config']} sm_{r['arch']}: {r['stack_bytes']} B"
              for r in rows if r["stack_bytes"] > (_SM80_STACK_ALLOWANCE if r["arch"] == 80 else 0)]
    assert not spills, "configs that spill:\n" + "\n".join(spills)
    mma = [r for r in rows if r["kernel"] == "_window_attention_fwd_kernel" and r["dtype"] == "bf16"]
    assert mma and all(r["tensor_cores"] for r in mma), "bf16 attention forward without tensor cores"
