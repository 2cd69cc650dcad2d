"""Triton kernels backend (GPU, or CPU tensors under TRITON_INTERPRET=1).

The ops (`fastwin::<op>_fwd/_bwd`, `fastwin.backend.triton_ops`) are registered at `import fastwin`
when triton is importable and something can run it (`register()`); `available()` only reports the
outcome. Kernel limits come from the kernel modules' own capability functions.
"""
from __future__ import annotations

import importlib.util
from typing import Optional

import torch

from ..contract import FUSED, AttentionCall, ConvCall, WindowAttentionCall
from ..kernels.triton import interpreting  # triton-free: reads the environment only
from . import library
from .compiled import make_impls

NAME = "triton"

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_state = {}
IMPLS = {}  # filled by register() once the ops exist


def register() -> Optional[str]:
    """Define the Triton ops and their autograd (once); None on success, else why not."""
    if "reason" not in _state:
        _state["reason"] = _register()
    return _state["reason"]


def _register() -> Optional[str]:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    if not (interpreting() or torch.cuda.is_available()):
        return "no CUDA device (set TRITON_INTERPRET=1 to run the kernels on the CPU, slowly)"
    try:
        from . import triton_ops  # (defines the fastwin:: ops)
    except Exception as exc:  # a broken triton install must not break `import fastwin`
        return f"the Triton kernels failed to load: {type(exc).__name__}: {exc}"
    library.register_autograd(triton_ops.NAMESPACE)
    _, _, dwln = _kernels()
    ops = [op for op in FUSED if f"{op.name}_fwd" in triton_ops.OPS]
    IMPLS.update(make_impls(triton_ops.NAMESPACE, ops, fused_layernorm_channels=dwln.MAX_CHANNELS))
    return None


def available() -> Optional[str]:
    return _state.get("reason", "fastwin.backend was not imported")


def _kernels():
    from ..kernels.triton import dwconv, dwconv_layernorm, window_attention

    return window_attention, dwconv, dwconv_layernorm


def _attention_reason(call) -> Optional[str]:
    if call.dropout_p > 0:
        return "attention dropout is not implemented in the Triton kernels"
    if call.dtype not in _DTYPES:
        return f"dtype {call.dtype} is not supported (float16, bfloat16, float32)"
    wa, _, _ = _kernels()
    if isinstance(call, AttentionCall):
        return wa.supports_attention(call.dtype, call.head_dim, call.seq_len, call.device_type)
    return wa.supports_window(call.dtype, call.head_dim, call.window_size, call.device_type)


def _conv_reason(call) -> Optional[str]:
    _, dw, _ = _kernels()
    k = call.kernel_size
    if k % 2 == 0 or not 1 <= k <= dw.MAX_KERNEL:
        return f"kernel_size must be odd and at most {dw.MAX_KERNEL}, got {k}"
    if call.dtype not in _DTYPES:
        return f"dtype {call.dtype} is not supported (float16, bfloat16, float32)"
    if call.device_type == "cuda" and call.dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return "bfloat16 needs a GPU with compute capability >= 8.0"
    return None


def supports(call) -> Optional[str]:
    if call.device_type == "cpu" and not interpreting():
        return "CPU tensors need TRITON_INTERPRET=1"
    if call.device_type not in ("cpu", "cuda"):
        return f"device {call.device_type} is not supported"
    if isinstance(call, ConvCall):
        return _conv_reason(call)
    if isinstance(call, (WindowAttentionCall, AttentionCall)):
        return _attention_reason(call)
    return None  # projections: torch's GEMM (cuBLAS), as every backend runs them off the CPU
