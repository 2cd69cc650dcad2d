"""fastwin._C CUDA kernels backend: the `cpp` backend's ops on CUDA tensors.

If the installed `fastwin._C` has no CUDA kernels, they are JIT-compiled the first time this backend
is asked whether it is available (see `fastwin.extension.load_cuda`).
"""
from __future__ import annotations

from typing import Optional

import torch

from . import cpp_backend, extension

NAME = "cuda"

IMPLS = cpp_backend.IMPLS

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128  # head dim is zero-padded to 32/64/96/128 in the tensor-core kernels (attention_mma*.cu)
MAX_TOKENS = 65536  # tokens per window or sequence (the bindings check it too)


def available() -> Optional[str]:
    return extension.load_cuda()


def supports(call) -> Optional[str]:
    if call.device_type != "cuda":
        return f"the cuda backend runs on CUDA tensors, got {call.device_type}"
    if call.op == "linear_gelu":
        return "linear_gelu has CPU kernels only (cuBLAS + torch's GELU is what CUDA runs)"
    if call.dtype not in SUPPORTED_DTYPES:
        return f"dtype {call.dtype} is not supported (float16, bfloat16, float32)"
    d = getattr(call, "head_dim", None)
    if d is not None and d > MAX_HEAD_DIM:
        return f"head_dim {d} > {MAX_HEAD_DIM} is not supported"
    tokens = getattr(call, "seq_len", None) or (call.window_size[0] * call.window_size[1]
                                                 if hasattr(call, "window_size") else 0)
    if tokens > MAX_TOKENS:
        return f"{tokens} tokens per window or sequence exceed {MAX_TOKENS}"
    if call.dtype in (torch.float16, torch.bfloat16) and hasattr(call, "head_dim"):
        major, _ = torch.cuda.get_device_capability()
        if major < 8:
            return "the tensor-core attention kernels need compute capability >= 8.0 for float16/bfloat16"
    return cpp_backend.common_refusal(call)
