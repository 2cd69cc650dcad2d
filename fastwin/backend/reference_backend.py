"""The pure-PyTorch backend: always available, supports every valid call."""
from __future__ import annotations

from typing import Optional

from ..contract import OPS

NAME = "reference"

IMPLS = {op.name: op.reference for op in OPS.values()}  # the references take the contract's argument order


def available() -> Optional[str]:
    return None


def supports(call) -> Optional[str]:
    return None
