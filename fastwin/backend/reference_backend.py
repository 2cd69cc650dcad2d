"""The pure-PyTorch backend: always available, supports every valid call."""
from __future__ import annotations

from typing import Optional

from .. import reference

NAME = "reference"


def _shifted_window_attention(qkv, num_heads, window_size, shift_size, table, qkv_bias, scale, pad_order, dropout_p,
                              logit_scale=None):
    extra = {} if logit_scale is None else {"logit_scale": logit_scale}
    return reference.shifted_window_attention_ref(qkv, num_heads, window_size, shift_size, table, qkv_bias, scale,
                                                  pad_order, dropout_p, **extra)


def _window_attention(qkv, num_heads, window_size, table, mask, scale, dropout_p, logit_scale=None):
    extra = {} if logit_scale is None else {"logit_scale": logit_scale}
    return reference.window_attention_ref(qkv, num_heads, window_size, table, mask, scale, dropout_p, **extra)


IMPLS = {
    "window_attention": _window_attention,
    "shifted_window_attention": _shifted_window_attention,
    "attention": reference.attention_ref,
    "dwconv2d": reference.dwconv2d_ref,
    "dwconv_layernorm": reference.dwconv_layernorm_ref,
    "linear_gelu": reference.linear_gelu_ref,
    "linear": reference.linear_ref,
    "conv1x1": reference.conv1x1_ref,
}


def available() -> Optional[str]:
    return None


def supports(call) -> Optional[str]:
    return None
