"""Triton kernels backend (GPU, or CPU tensors under TRITON_INTERPRET=1).

The kernels live in `fastwin.kernels.triton`; each op module there exports
    IMPLS:    {op name: callable with the reference function's signature}
    SUPPORTS: {op name: supports(call) -> Optional[str]}
and is listed in `_OP_MODULES`.
"""
from __future__ import annotations

import importlib
import os
from typing import Optional

import torch

NAME = "triton"

_OP_MODULES = (
    "fastwin.kernels.triton.window_attention_ops",
    "fastwin.kernels.triton.dwconv_ops",
)

IMPLS = {}
_SUPPORTS = {}


def interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available() -> Optional[str]:
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed (pip install triton)"
    if not (torch.cuda.is_available() or interpret()):
        return "no CUDA device (set TRITON_INTERPRET=1 to run the kernels on the CPU, slowly)"
    for name in _OP_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        IMPLS.update(mod.IMPLS)
        _SUPPORTS.update(mod.SUPPORTS)
    return None if IMPLS else "no Triton kernels are installed"


def supports(call) -> Optional[str]:
    if call.device.type == "cpu" and not interpret():
        return "CPU tensors need TRITON_INTERPRET=1"
    if call.device.type not in ("cpu", "cuda"):
        return f"device {call.device.type} is not supported"
    return _SUPPORTS[call.op](call)
