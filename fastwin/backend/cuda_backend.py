"""fastwin._C CUDA kernels backend."""
from __future__ import annotations

from typing import Optional

NAME = "cuda"

IMPLS = {}


def available() -> Optional[str]:
    return "fastwin._C CUDA kernels are not implemented yet"


def supports(call) -> Optional[str]:
    return None
