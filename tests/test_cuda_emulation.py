"""csrc/cuda's attention kernels and torch bindings, run on a CPU emulator of the CUDA features they
use (tests/cuda_emu/fw_cuda_emu.h), forward and backward against the reference. No GPU needed.

The .cu files are compiled as C++ with FASTWIN_CPU_EMULATION (csrc/cuda/device_compat.cuh): the
same kernel source, launch plans, bias tile and fixed-order reductions that run on the GPU, with
ldmatrix / mma.m16n8k16 / shfl evaluated from their PTX definitions, block threads as cooperative
fibers, and checks a GPU would not make (misaligned or out-of-range shared addresses, barriers not
reached by all threads). Outputs are NaN-filled before the kernels write them (torch's
deterministic mode fills `empty`). What it cannot show: timing, races between blocks, and the
hardware's own f32 accumulation order. tests/test_cuda_attention.py repeats all of this on a GPU.
"""
import glob
import os
import re
import shutil
import subprocess

import pytest
import torch

from benchmarks.cuda_resources import cuda_include_dir
from fastwin.reference.attention import attention_ref
from fastwin.reference.window import shift_mask, shifted_window_attention_ref, window_attention_ref
from tests.layouts import QKV_LAYOUTS, strided_qkv
from tests.tolerance import assert_within_rule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMU = os.path.join(ROOT, "tests", "cuda_emu")
BUILD = os.path.join(os.environ.get("FASTWIN_CACHE_DIR", os.path.expanduser("~/.cache/fastwin")), "cuda_emu")


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("g++") is None or cuda_include_dir() is None,
                       reason="needs g++ and the CUDA headers (cuda_runtime.h, cuda_fp16.h, cuda_bf16.h)"),
]


@pytest.fixture(scope="module")
def emu():
    from torch.utils.cpp_extension import load

    os.makedirs(BUILD, exist_ok=True)
    load(name="fastwin_cuda_emu", sources=[os.path.join(EMU, "emu_ops.cpp")],
         extra_include_paths=[EMU, os.path.join(EMU, "stubs"), os.path.join(ROOT, "csrc", "include"),
                              os.path.join(ROOT, "csrc", "cuda"), cuda_include_dir()],
         extra_cflags=["-O1", "-DFASTWIN_CPU_EMULATION", "-Wno-unknown-pragmas"], build_directory=BUILD,
         is_python_module=False, verbose=False)
    return torch.ops.fastwin_emu


@pytest.fixture
def plan():
    """Set the launcher's test overrides (FASTWIN_CUDA_ATTN_MODE / _SLOT) for one test."""
    keys = ("FASTWIN_CUDA_ATTN_MODE", "FASTWIN_CUDA_ATTN_SLOT")
    old = {k: os.environ.get(k) for k in keys}

    def set_plan(mode="auto", per_slot=None):
        os.environ[keys[0]] = mode
        os.environ.pop(keys[1], None)
        if per_slot:
            os.environ[keys[1]] = str(per_slot)

    yield set_plan
    for k, v in old.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(autouse=True)
def _nan_filled_outputs():
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(prev)


def _reference(fn, inputs, dtype, grad):
    xs = [None if t is None else t.detach().to(dtype).requires_grad_() for t in inputs]
    out = fn(*xs)
    out.backward(grad.to(dtype))
    return out.detach(), [None if x is None else x.grad for x in xs]


def compare(ref_fn, fwd, bwd, inputs, dtype, names):
    """Emulated fwd / bwd ops vs the fp64 reference, within 2x the low-precision reference's error."""
    grad = torch.randn(ref_fn(*[None if t is None else t.double() for t in inputs]).shape, dtype=torch.float64)
    exact, eg = _reference(ref_fn, inputs, torch.float64, grad)
    low, lg = _reference(ref_fn, inputs, dtype, grad)
    xs = [None if t is None else t.to(dtype) for t in inputs]
    out, lse = fwd(*xs)
    assert lse.dtype == torch.float32
    assert_within_rule(out, low, exact, "output", dtype)
    grads = bwd(grad.to(dtype), out, lse, *xs)
    for name, g, lo, ex in zip(names, grads, lg, eg):
        if ex is None:
            assert g.numel() == 0, f"{name}: the reference has no gradient"
            continue
        assert_within_rule(g.view(ex.shape), lo, ex, f"grad {name}", dtype)
    return out, grads


def run_swin(E, B, H, W, w, s, heads, d, pad_order, dtype, qkv=None, scale_q=1.0):
    qkv = torch.randn(B, H, W, 3 * heads * d, dtype=torch.float64) if qkv is None else qkv
    qkv[..., :heads * d] *= scale_q
    table = torch.randn((2 * w - 1) ** 2, heads, dtype=torch.float64)
    qkv_bias = torch.randn(3 * heads * d, dtype=torch.float64)
    pr, sc = pad_order == "pad_roll", d ** -0.5
    return compare(
        lambda q, t, b: shifted_window_attention_ref(q, t, b, heads, (w, w), (s, s), None, pad_order == "pad_roll"),
        lambda q, t, b: E.shifted_window_attention_fwd(q, t, b, heads, [w, w], [s, s], sc, pr),
        lambda g, o, lse, q, t, b: E.shifted_window_attention_bwd(g, o, lse, q, t, b, heads, [w, w], [s, s], sc, pr,
                                                                  [True, True, True]),
        [qkv, table, qkv_bias], dtype, ["qkv", "table", "qkv_bias"])


LOWP = [torch.float16, torch.bfloat16]


SWIN = [(1, 10, 13, 7, 3, 2, 32), (2, 7, 7, 7, 0, 1, 64), (2, 5, 5, 12, 6, 1, 16)]


@pytest.mark.parametrize("dtype,case", [(dt, c) for dt in LOWP for c in SWIN] + [(torch.float32, SWIN[0])],
                         ids=lambda x: str(x) if isinstance(x, torch.dtype) else "B{}-{}x{}-w{}-s{}-h{}-d{}".format(*x))
@pytest.mark.parametrize("pad_order", ["roll_pad", "pad_roll"])
def test_shifted_window_attention(emu, case, pad_order, dtype):
    run_swin(emu, *case, pad_order, dtype)


@pytest.mark.parametrize("mode", ["resident", "streaming"])
@pytest.mark.parametrize("case", [(2, 14, 14, 7, 3, 2, 32, "pad_roll"), (1, 16, 16, 16, 8, 1, 32, "roll_pad"),
                                  (1, 8, 8, 8, 4, 1, 128, "roll_pad"), (1, 9, 11, 7, 3, 1, 80, "pad_roll"),
                                  (1, 9, 11, 7, 3, 1, 20, "roll_pad")],
                         ids=lambda c: "B{}-{}x{}-w{}-s{}-h{}-d{}-{}".format(*c))
def test_modes_head_dims_and_slots(emu, plan, case, mode):
    """Resident and streaming kernels, backward slots of 2 groups, d = 20 / 32 / 80 / 128."""
    plan(mode, per_slot=2)
    *shape, pad_order = case
    run_swin(emu, *shape, pad_order, torch.bfloat16)


def test_saturated_softmax(emu):
    run_swin(emu, 1, 14, 14, 7, 3, 2, 32, "roll_pad", torch.bfloat16, scale_q=8.0)


@pytest.mark.parametrize("dtype,mask_kind", [(dt, m) for dt in LOWP for m in ("shift", "random", "none")]
                         + [(torch.float32, "random")], ids=str)
def test_window_attention(emu, plan, mask_kind, dtype):
    plan("auto", per_slot=2)
    heads, d, w = 2, 32, 7
    N = w * w
    mask = {"shift": lambda: shift_mask(14, 14, (w, w), (3, 3)).double(),
            "random": lambda: torch.randn(4, N, N, dtype=torch.float64), "none": lambda: None}[mask_kind]()
    qkv = torch.randn(8, N, 3 * heads * d, dtype=torch.float64)
    table = torch.randn((2 * w - 1) ** 2, heads, dtype=torch.float64)
    sc = d ** -0.5
    compare(lambda q, t, m: window_attention_ref(q, t, m, heads, (w, w)),
            lambda q, t, m: emu.window_attention_fwd(q, t, m, heads, [w, w], sc),
            lambda g, o, lse, q, t, m: emu.window_attention_bwd(g, o, lse, q, t, m, heads, [w, w], sc,
                                                                [True, True, True]),
            [qkv, table, mask], dtype, ["qkv", "table", "mask"])


@pytest.mark.parametrize("mode", ["auto", "resident"])
@pytest.mark.parametrize("case", [(1, 150, 1, 32, torch.bfloat16), (2, 49, 2, 64, torch.float16),
                                  (1, 70, 1, 128, torch.bfloat16), (1, 33, 2, 64, torch.float32)],
                         ids=lambda c: "B{}-N{}-h{}-d{}-{}".format(*c))
def test_global_attention(emu, plan, case, mode):
    plan(mode)
    B, N, heads, d, dtype = case
    sc = d ** -0.5
    compare(lambda q: attention_ref(q, heads), lambda q: emu.attention_fwd(q, heads, sc),
            lambda g, o, lse, q: [emu.attention_bwd(g, o, lse, q, heads, sc, [True])],
            [torch.randn(B, N, 3 * heads * d, dtype=torch.float64)], dtype, ["qkv"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("layout", QKV_LAYOUTS)
def test_non_contiguous_qkv(emu, layout, dtype):
    B, H, W, heads, d, w, s = 1, 10, 13, 2, 32, 7, 3
    C3 = 3 * heads * d
    base = torch.randn(B, H, W, C3, dtype=torch.float64)
    table = torch.randn((2 * w - 1) ** 2, heads, dtype=torch.float64)
    qkv_bias = torch.randn(C3, dtype=torch.float64)

    def strided(q):
        return strided_qkv(q, layout)

    sc = d ** -0.5
    compare(lambda q, t, b: shifted_window_attention_ref(q, t, b, heads, (w, w), (s, s)),
            lambda q, t, b: emu.shifted_window_attention_fwd(strided(q), t, b, heads, [w, w], [s, s], sc, False),
            lambda g, o, lse, q, t, b: emu.shifted_window_attention_bwd(g, o, lse, strided(q), t, b, heads, [w, w],
                                                                        [s, s], sc, False, [True, True, True]),
            [base, table, qkv_bias], dtype, ["qkv", "table", "qkv_bias"])


@pytest.mark.parametrize("dtype", LOWP + [torch.float32], ids=str)
def test_fully_masked_row(emu, dtype):
    """An all -inf mask row: output 0, lse +inf, zero and finite gradients (the reference's SDPA
    math path does the same)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    heads, d, w = 2, 32, 7
    N = w * w
    mask = torch.zeros(2, N, N, dtype=torch.float64)
    mask[0, 5, :] = float("-inf")
    mask[1, 7, 3:] = float("-inf")
    qkv = torch.randn(4, N, 3 * heads * d, dtype=torch.float64)
    table = torch.randn((2 * w - 1) ** 2, heads, dtype=torch.float64)
    sc = d ** -0.5
    with sdpa_kernel([SDPBackend.MATH]):
        out, grads = compare(
            lambda q, t, m: window_attention_ref(q, t, m, heads, (w, w)),
            lambda q, t, m: emu.window_attention_fwd(q, t, m, heads, [w, w], sc),
            lambda g, o, lse, q, t, m: emu.window_attention_bwd(g, o, lse, q, t, m, heads, [w, w], sc,
                                                                [True, True, True]),
            [qkv, table, mask], dtype, ["qkv", "table", "mask"])
    row = out.view(2, 2, N, -1)[:, 0, 5]
    assert torch.equal(row, torch.zeros_like(row))
    dq = grads[0].view(2, 2, N, 3, heads, d)[:, 0, 5, 0]
    assert torch.equal(dq, torch.zeros_like(dq))
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("mode", ["auto", "resident"])
@pytest.mark.parametrize("dtype", LOWP + [torch.float32], ids=str)
def test_nan_query_gives_a_nan_row(emu, plan, dtype, mode):
    """One NaN in a query: its row (that head) is NaN with a NaN lse, not the zeros and +inf lse of a
    fully masked row (issue 22 item 2); every other row stays finite."""
    plan(mode)
    heads, d, w = 2, 32, 7
    N = w * w
    qkv = torch.randn(2, N, 3 * heads * d).to(dtype)
    qkv[0, 5, 3] = float("nan")  # q of token 5, head 0, window 0
    table = torch.randn((2 * w - 1) ** 2, heads).to(dtype)
    out, lse = emu.window_attention_fwd(qkv, table, None, heads, [w, w], d ** -0.5)
    out = out.view(2, N, heads, d)
    assert out[0, 5, 0].isnan().all() and lse.view(2, heads, N)[0, 0, 5].isnan()
    finite = torch.ones(out.shape, dtype=torch.bool)
    finite[0, 5, 0] = False
    assert torch.isfinite(out[finite]).all()


def test_backward_is_deterministic(emu, plan):
    plan("auto", per_slot=2)
    B, H, W, w, s, heads, d = 2, 10, 13, 7, 3, 2, 32
    qkv = torch.randn(B, H, W, 3 * heads * d).bfloat16()
    table = torch.randn((2 * w - 1) ** 2, heads).bfloat16()
    qkv_bias = torch.randn(3 * heads * d).bfloat16()
    grad = torch.randn(B, H, W, heads * d).bfloat16()
    args = (heads, [w, w], [s, s], d ** -0.5, True)
    out, lse = emu.shifted_window_attention_fwd(qkv, table, qkv_bias, *args)
    first = emu.shifted_window_attention_bwd(grad, out, lse, qkv, table, qkv_bias, *args, [True, True, True])
    again = emu.shifted_window_attention_bwd(grad, out, lse, qkv, table, qkv_bias, *args, [True, True, True])
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_schemas_match_the_extension(emu):
    """tests/cuda_emu/emu_ops.cpp repeats csrc/ops.cpp's attention schemas."""
    def schemas(path, lib):
        text = open(path).read()
        body = text[text.index(f"TORCH_LIBRARY({lib}, m)"):]
        defs = re.findall(r'm\.def\(((?:\s*"[^"]*")+)\s*\)', body)
        return {re.sub(r'"\s*"', "", d).strip().strip('"') for d in defs if "attention" in d}

    ours = schemas(os.path.join(EMU, "emu_ops.cpp"), "fastwin_emu")
    theirs = schemas(os.path.join(ROOT, "csrc", "ops.cpp"), "fastwin_C")
    assert ours == theirs and len(ours) == 6
    assert glob.glob(os.path.join(EMU, "*.cpp"))


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs nm (binutils)")
def test_module_has_no_cudart_symbols(emu):
    """The emulator's runtime calls must not be cudart symbols: with a CUDA build of torch the real
    libcudart is in the process and the dynamic linker would bind them there (no driver: errors)."""
    out = subprocess.run(["nm", "-D", os.path.join(BUILD, "fastwin_cuda_emu.so")], capture_output=True,
                         text=True, check=True).stdout
    assert re.findall(r"\b(cuda[A-Z]\w*)", out) == []
