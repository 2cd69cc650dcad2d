"""fastwin._C CUDA kernels backend: the `cpp` backend's ops on CUDA tensors.

If the installed `fastwin._C` has no CUDA kernels, they are JIT-compiled the first time this backend
is asked whether it is available (see `fastwin.extension.load_cuda`).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..contract import ATTENTION_CALLS, OPS, AttentionCall
from . import cpp_backend, extension

NAME = "cuda"

IMPLS = cpp_backend.IMPLS

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128  # head dim is zero-padded to 32/64/96/128 in the tensor-core kernels (attention_mma*.cu)
MAX_TOKENS = 65536  # tokens per window or sequence (the bindings check it too)
_kernels = {}  # op -> whether fastwin_C has a CUDA kernel for it (fixed once the extension loaded)


def available() -> Optional[str]:
    return extension.load_cuda()


def _cuda_kernel(op: str) -> bool:
    """The op runs on CUDA here: a projection (torch's GEMM), or a C++ op with a CUDA kernel."""
    if op not in _kernels:
        qualname = f"fastwin_C::{op}_fwd"
        _kernels[op] = op not in OPS or not OPS[op].signature or \
            torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "CUDA")
    return _kernels[op]


def supports(call) -> Optional[str]:
    if call.device_type != "cuda":
        return f"the cuda backend runs on CUDA tensors, got {call.device_type}"
    if not _cuda_kernel(call.op):
        return f"{call.op} has CPU kernels only (cuBLAS + torch's epilogue is what CUDA runs)"
    if call.dtype not in SUPPORTED_DTYPES:
        return f"dtype {call.dtype} is not supported (float16, bfloat16, float32)"
    if isinstance(call, ATTENTION_CALLS):
        if call.head_dim > MAX_HEAD_DIM:
            return f"head_dim {call.head_dim} > {MAX_HEAD_DIM} is not supported"
        tokens = call.seq_len if isinstance(call, AttentionCall) else call.window_size[0] * call.window_size[1]
        if tokens > MAX_TOKENS:
            return f"{tokens} tokens per window or sequence exceed {MAX_TOKENS}"
        if call.dtype in (torch.float16, torch.bfloat16):
            major, _ = torch.cuda.get_device_capability()
            if major < 8:
                return "the tensor-core attention kernels need compute capability >= 8.0 for float16/bfloat16"
    return cpp_backend.common_refusal(call)
