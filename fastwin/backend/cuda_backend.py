"""fastwin._C CUDA kernels backend.

Same ops and Python wrappers as the `cpp` backend (the dispatcher picks CPU or CUDA kernels by
device). If the installed `fastwin._C` has no CUDA kernels, they are JIT-compiled on first use
(see `fastwin._extension`).
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import _extension
from . import cpp_backend

NAME = "cuda"

IMPLS = cpp_backend.IMPLS

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128  # per-lane register accumulators of the CUDA kernels (csrc/cuda/attention.cu)


def available() -> Optional[str]:
    reason = _extension.load_cuda()
    if reason is None:
        cpp_backend.register_python_side()
    return reason


def supports(call) -> Optional[str]:
    if call.device.type != "cuda":
        return f"the cuda backend runs on CUDA tensors, got {call.device.type}"
    if call.dtype not in SUPPORTED_DTYPES:
        return f"dtype {call.dtype} is not supported (float16, bfloat16, float32)"
    d = call.param("head_dim")
    if d is not None and d > MAX_HEAD_DIM:
        return f"head_dim {d} > {MAX_HEAD_DIM} is not supported"
    return cpp_backend.common_refusal(call)
