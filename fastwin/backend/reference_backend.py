"""The pure-PyTorch backend: always available, supports every valid call."""
from __future__ import annotations

from typing import Optional

from .. import reference

NAME = "reference"

IMPLS = {
    "window_attention": reference.window_attention_ref,
    "shifted_window_attention": reference.shifted_window_attention_ref,
    "attention": reference.attention_ref,
    "dwconv2d": reference.dwconv2d_ref,
    "dwconv_layernorm": reference.dwconv_layernorm_ref,
}


def available() -> Optional[str]:
    return None


def supports(call) -> Optional[str]:
    return None
