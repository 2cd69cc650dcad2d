"""fastwin._C CPU kernels backend."""
from __future__ import annotations

from typing import Optional

NAME = "cpp"

IMPLS = {}


def available() -> Optional[str]:
    return "fastwin._C is not built (the C++ extension is not implemented yet)"


def supports(call) -> Optional[str]:
    return None
