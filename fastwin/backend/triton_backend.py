"""Triton kernels backend (GPU, or CPU under TRITON_INTERPRET=1)."""
from __future__ import annotations

import os
from typing import Optional

import torch

NAME = "triton"

IMPLS = {}


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available() -> Optional[str]:
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed (pip install triton)"
    if not (torch.cuda.is_available() or _interpret()):
        return "no CUDA device (set TRITON_INTERPRET=1 to run the kernels on the CPU, slowly)"
    if not IMPLS:
        return "the Triton kernels are not implemented yet"
    return None


def supports(call) -> Optional[str]:
    return None
