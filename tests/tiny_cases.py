"""One tiny case per op and kind of input, and the (backend, device) pairs to run them on: shared by
the forward-mode / torch.func, NaN-propagation and double-backward tests.

Shapes are tiny: the Triton kernels run in the interpreter here (~3 ms per program instance) and
jacrev runs one backward per output element. The GPU rows run where there is a GPU and skip here.
"""
from typing import Callable, List, Sequence, Tuple

import pytest
import torch

import fastwin
from fastwin import testing
from fastwin.testing import Case
from tests.helpers import BACKEND_DEVICES

CASES: Tuple[Case, ...] = (
    testing.swin_case("swin w2 s1 3x3 padded", 1, 3, 3, 1, 4, (2, 2), (1, 1)),
    testing.swin_case("swin v2 cosine w2 s0x1 2x3", 1, 2, 3, 1, 4, (2, 2), (0, 1), "pad_roll", cosine=True),
    testing.window_case("windows w2 mask", 1, 1, 1, 4, (2, 2)),
    testing.attention_case("attention N=3", 1, 3, 1, 4),
    testing.dwconv_case("dwconv k3 residual", 1, 2, 3, 3, 3, residual=True),
    testing.dwconv_layernorm_case("dwconv+LN k3", 1, 2, 2, 3),
    testing.linear_gelu_case("linear+gelu", (2, 3), 4),
    testing.linear_case("linear + residual", (2, 3), 4, residual=True),
    testing.conv1x1_case("conv1x1 + gelu", 1, 3, 2, 2, 4, gelu="none"),
)

# (backend, device): every backend that can run here, and the GPU rows
BACKENDS = tuple(BACKEND_DEVICES)


def dtype_of(backend: str) -> torch.dtype:
    """fp64 where the backend takes it (gradcheck-grade), else fp32."""
    return torch.float32 if backend in ("triton", "cuda") else torch.float64


def inputs_or_skip(case: Case, backend: str, device: str, dtype: torch.dtype = None) -> List:
    """The case's random inputs for `backend` on `device`; skips where the backend cannot run it."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if not fastwin.backends()[backend]:
        pytest.skip(f"{backend}: {fastwin.backends().reasons[backend]}")
    dtype = dtype or dtype_of(backend)
    why = testing.supported(case, backend, device, dtype)
    if why is not None:
        pytest.skip(why)
    return case.make(device, dtype)


def differentiable(case: Case, tensors) -> List[int]:
    """Positions of the inputs that are present and differentiable."""
    return [i for i, (t, spec) in enumerate(zip(tensors, case.inputs)) if t is not None and spec.grad]


def on(case: Case, backend: str, inputs: Sequence, at: Sequence[int]) -> Callable:
    """f(*moving): the op on `backend` (strictly) with inputs[at] replaced by `moving`."""
    def f(*moving):
        full = list(inputs)
        for i, x in zip(at, moving):
            full[i] = x
        with fastwin.set_backend(backend, strict=True):
            return case.fn(*full)

    return f


def outs(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)
