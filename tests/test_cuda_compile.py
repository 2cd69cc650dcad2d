"""The CUDA sources build without a GPU (SPEC section 5), and the CUDA depthwise conv works on one.

* every csrc/cuda/*.cu compiles with plain nvcc (CUDA headers and fastwin's own only) for sm_80
  and sm_90a, with the extension's flags; each file is compiled once per target (module fixture,
  benchmarks/cuda_resources.py does the compiling and parsing);
* the tensor-core attention kernels (every dtype x padded head dim x kernel) use HMMA and keep all
  values in registers: 0 spill bytes, 0 stack;
* the torch bindings (csrc/cuda/bindings_cuda.cpp) compile against torch's headers, with stand-ins
  for the CUDA headers a CPU-only torch lacks (generated here).

Attention on the GPU: tests/test_cuda_attention.py; on the CPU emulator: tests/test_cuda_emulation.py.
"""
import os
import shutil
import subprocess

import pytest
import torch

import fastwin
from benchmarks import cuda_resources as cr
from fastwin import ops
from tests.tolerance import assert_within_rule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ["80", "90a"]
MMA_KERNELS = ("attn_fwd_mma_kernel", "attn_bwd_q_kernel", "attn_bwd_kv_kernel")

requires_nvcc = pytest.mark.skipif(cr.find_tool("nvcc") is None, reason="nvcc is not on PATH (nor CUDA_HOME)")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    results = cr.compile_all(TARGETS, jobs=os.cpu_count() or 1, workdir=str(tmp_path_factory.mktemp("cubin")))
    return {(os.path.basename(r.path), r.arch): r for r in results}


@requires_nvcc
@pytest.mark.slow  # nvcc: minutes on 2 cores
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", [os.path.basename(p) for p in cr.cu_files()])
def test_nvcc_compiles(compiled, name, target):
    res = compiled[(name, target)]
    assert res.returncode == 0, res.log[-6000:]


@requires_nvcc
@pytest.mark.slow  # needs the nvcc build of every kernel (the `compiled` fixture)
@pytest.mark.parametrize("target", TARGETS)
def test_tensor_core_kernels_use_hmma_without_spills(compiled, target):
    kernels = {}
    for (_, arch), res in compiled.items():
        if arch == target:
            for name, st in res.kernels.items():
                if cr.split_name(name)[0] in MMA_KERNELS:
                    kernels[name] = st
    assert len(kernels) == len(MMA_KERNELS) * 2 * 4, sorted(kernels)  # x {f16, bf16} x d_pad {32, 64, 96, 128}
    for name, st in kernels.items():
        assert (st.spill_store_bytes, st.spill_load_bytes, st.stack_bytes) == (0, 0, 0), f"{name}: {st}"
        assert st.registers <= 255, f"{name}: {st}"
        if cr.find_tool("cuobjdump"):
            assert st.hmma_count and st.hmma_count > 0, f"{name}: no tensor-core instructions"


def _torch_include_flags():
    from torch.utils import cpp_extension

    return [f"-I{p}" for p in cpp_extension.include_paths()]


STUBS = {
    "ATen/cuda/CUDAContext.h": """#pragma once
#include <cuda_runtime.h>
namespace at { namespace cuda {
struct CUDAStream { operator cudaStream_t() const { return nullptr; } };
inline CUDAStream getCurrentCUDAStream() { return {}; }
} }
""",
    "c10/cuda/CUDAGuard.h": """#pragma once
#include <c10/core/Device.h>
namespace c10 { namespace cuda { struct CUDAGuard { explicit CUDAGuard(c10::Device) {} }; } }
""",
}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not on PATH")
def test_bindings_compile_against_torch_headers(tmp_path):
    """bindings_cuda.cpp only builds where torch has CUDA; check its C++ here against torch's CPU
    headers, the two CUDA headers it includes replaced by stand-ins."""
    cuda_inc = cr.cuda_include_dir()
    if cuda_inc is None:
        pytest.skip("CUDA headers (cuda_runtime.h) not found")
    for rel, text in STUBS.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    cmd = ["g++", "-std=c++20", "-fsyntax-only", f"-I{tmp_path}", *_torch_include_flags(), f"-I{cuda_inc}",
           f"-I{os.path.join(ROOT, 'csrc', 'include')}", "-DTORCH_EXTENSION_NAME=_C",
           os.path.join(ROOT, "csrc", "cuda", "bindings_cuda.cpp")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr[-6000:]}"


requires_cuda_backend = pytest.mark.skipif(
    not torch.cuda.is_available() or not fastwin.backends()["cuda"],
    reason="needs a CUDA device and the cuda backend")


@pytest.mark.gpu
@requires_cuda_backend
@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_dwconv(k, channels_last):
    x = torch.randn(2, 8, 9, 11)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    inputs = [x, torch.randn(8, 1, k, k), torch.randn(8)]

    def run(backend, dtype):
        xs = [t.detach().to("cuda", dtype).requires_grad_() for t in inputs]
        if channels_last:
            xs[0] = xs[0].detach().to(memory_format=torch.channels_last).requires_grad_()
        with fastwin.set_backend(backend, strict=True):
            out = ops.dwconv2d(xs[0], xs[1], xs[2], True)
        ramp = torch.arange(out.numel(), device="cuda").view(out.shape).to(dtype) % 3
        out.backward(torch.ones_like(out) * 0.5 + ramp)
        return out, [t.grad for t in xs]

    fast, fg = run("cuda", torch.float32)
    low, lg = run("reference", torch.float32)
    exact, eg = run("reference", torch.float64)
    assert_within_rule(fast, low, exact, "output", torch.float32)
    for i, (f, lo, ex) in enumerate(zip(fg, lg, eg)):
        assert_within_rule(f, lo, ex, f"grad[{i}]", torch.float32)
