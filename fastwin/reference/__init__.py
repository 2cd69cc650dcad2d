"""Pure-PyTorch reference implementations: the specification every fast path is tested against.

This package imports only torch. Every function documents its shapes; every fast backend must
compute the same function (SPEC §2, §5).
"""
from .attention import attention_ref
from .conv import dwconv2d_ref, dwconv_layernorm_ref
from .mlp import conv1x1_ref, linear_gelu_ref, linear_ref
from .window import (
    relative_position_index,
    shift_mask,
    shifted_window_attention_ref,
    window_attention_ref,
    window_partition,
    window_reverse,
)

__all__ = [
    "attention_ref",
    "conv1x1_ref",
    "dwconv2d_ref",
    "dwconv_layernorm_ref",
    "linear_gelu_ref",
    "linear_ref",
    "relative_position_index",
    "shift_mask",
    "shifted_window_attention_ref",
    "window_attention_ref",
    "window_partition",
    "window_reverse",
]
