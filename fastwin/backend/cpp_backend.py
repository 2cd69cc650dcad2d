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


def dwconv_inference(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Depthwise "same" conv (stride 1, odd k) on a channels-last `x` [B, C, H, W] through the C++ kernel,
    no autograd: for inference-only forms that checked `onednn.usable` and that this backend runs (UniFormer's
    position embeddings and local aggregators, where its register-blocked kernel is 1.1-2.3x oneDNN's
    depthwise conv, 1 thread). weight [C, 1, k, k]; bias [C] or None. Returns [B, C, H, W], channels-last."""
    return torch.ops.fastwin_C.dwconv2d_fwd(x, weight, bias, False, "NCHW")
