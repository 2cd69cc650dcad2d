"""fastwin._C CPU kernels backend (ops `torch.ops.fastwin_C.*`, schemas in csrc/).

The ops' fake kernels and autograd are registered when `fastwin._C` loads (`cpp_ops.register`, at
`import fastwin`). The `cuda` backend runs the same ops on CUDA tensors.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..contract import ATTENTION_CALLS, CPP
from . import extension
from .compiled import make_impls

NAME = "cpp"

IMPLS = make_impls("fastwin_C", CPP)

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def available() -> Optional[str]:
    return extension.load_cpu()


def common_refusal(call) -> Optional[str]:
    """Limits shared by the CPU and CUDA kernels."""
    if isinstance(call, ATTENTION_CALLS) and call.dropout_p > 0:
        return f"attention dropout is not implemented (dropout_p={call.dropout_p})"
    return None


def supports(call) -> Optional[str]:
    if call.device_type != "cpu":
        return f"the cpp backend runs on CPU tensors, got {call.device_type}"
    if call.dtype not in SUPPORTED_DTYPES:
        return f"dtype {call.dtype} is not supported"
    return common_refusal(call)
