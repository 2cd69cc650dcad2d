"""Every CUDA kernel file compiles with plain `nvcc -c` (no torch headers) for sm_80 and sm_90,
and the CUDA backend matches the reference where a GPU exists."""
import glob
import os
import shutil
import subprocess

import pytest
import torch

import fastwin
from fastwin import ops
from tests.tolerance import assert_within_rule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CU_FILES = sorted(glob.glob(os.path.join(ROOT, "csrc", "**", "*.cu"), recursive=True))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("path", CU_FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_nvcc_compiles(path, arch, tmp_path):
    cmd = ["nvcc", "-c", "-std=c++17", f"-arch={arch}", "-O1", "-I", os.path.join(ROOT, "csrc", "include"),
           path, "-o", str(tmp_path / "k.o")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"


requires_cuda_backend = pytest.mark.skipif(
    not torch.cuda.is_available() or not fastwin.backends()["cuda"],
    reason="needs a CUDA device and the cuda backend")


def _compare(fn, inputs, dtype):
    def run(backend, cast):
        xs = [None if t is None else t.detach().to("cuda", cast).requires_grad_() for t in inputs]
        with fastwin.set_backend(backend, strict=True):
            out = fn(*xs)
        out.backward(torch.ones_like(out) * 0.5 + torch.arange(out.numel(), device="cuda").view(out.shape).to(cast) % 3)
        return out, [None if x is None else x.grad for x in xs]

    fast, fg = run("cuda", dtype)
    low, lg = run("reference", dtype)
    exact, eg = run("reference", torch.float64)
    assert_within_rule(fast, low, exact, "output", dtype)
    for i, (f, lo, ex) in enumerate(zip(fg, lg, eg)):
        if ex is not None:
            assert_within_rule(f, lo, ex, f"grad[{i}]", dtype)


@pytest.mark.gpu
@requires_cuda_backend
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", [(14, 14, 7, 3, 32), (10, 13, 7, 3, 64), (9, 9, 12, 6, 32), (16, 16, 8, 4, 128)])
@pytest.mark.parametrize("pad_order", ["roll_pad", "pad_roll"])
def test_cuda_shifted_window_attention(dtype, case, pad_order):
    H, W, w, s, d = case
    w_eff = min(w, H, W)
    s = s if w_eff == w else 0
    heads = 2
    fn = lambda q, t, b: ops.shifted_window_attention(q, heads, w_eff, s, t, b, pad_order=pad_order)  # noqa: E731
    _compare(fn, [torch.randn(2, H, W, 3 * heads * d), torch.randn((2 * w_eff - 1) ** 2, heads),
                  torch.randn(3 * heads * d)], dtype)


@pytest.mark.gpu
@requires_cuda_backend
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_window_and_global_attention(dtype):
    from fastwin.reference import shift_mask
    mask = shift_mask(14, 14, (7, 7), (3, 3))
    _compare(lambda q, t, m: ops.window_attention(q, 2, 7, t, m),
             [torch.randn(8, 49, 192), torch.randn(169, 2), mask], dtype)
    _compare(lambda q: ops.attention(q, 2), [torch.randn(2, 197, 192)], dtype)


@pytest.mark.gpu
@requires_cuda_backend
@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_dwconv(k, channels_last):
    x = torch.randn(2, 8, 9, 11)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    _compare(lambda x_, w_, b_: ops.dwconv2d(x_, w_, b_, True), [x, torch.randn(8, 1, k, k), torch.randn(8)],
             torch.float32)
