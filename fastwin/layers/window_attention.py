"""`fastwin.WindowAttention`: drop-in for the official Swin `WindowAttention` (same constructor,
parameter names and `forward(x, mask=None)`), running `fastwin.ops.window_attention`."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .. import ops
from ..ops import relative_position_index
from ..utils import pair
from . import checks, projection


class WindowAttention(nn.Module):
    """Window-based multi-head self-attention with relative position bias.

    Args:
        dim: input channels C.
        window_size: Wh or (Wh, Ww).
        num_heads: number of heads.
        qkv_bias: learnable bias on the qkv projection.
        qk_scale: overrides the default scale head_dim ** -0.5.
        attn_drop: dropout on the attention weights; proj_drop: dropout on the output.
        head_dim: per-head channels if not dim // num_heads (timm's extension).
        backend: run this module's attention and projections on this backend (None: the thread's choice).

    forward(x [B*nW, N, C], mask [nW, N, N] | None) -> [B*nW, N, C]
    """

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, qk_scale=None, attn_drop=0.0,
                 proj_drop=0.0, head_dim: Optional[int] = None, backend: Optional[str] = None):
        super().__init__()
        self.backend = ops.backend_name(backend)
        if head_dim is None and dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim = dim
        self.window_size = pair("window_size", window_size)
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        attn_dim = self.head_dim * num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        # Derived, so not saved; official checkpoints carry it and `_load_from_state_dict` drops it.
        self.register_buffer("relative_position_index", relative_position_index(self.window_size), persistent=False)
        self.qkv = nn.Linear(dim, attn_dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(attn_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "relative_position_index", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        wh, ww = self.window_size
        checks.features(x, self, self.dim, ("[B*nW, N, C]",))
        checks.window_tokens(x, self, self.window_size)
        checks.window_mask(mask, x, wh * ww, self)
        checks.like_weights(x, self.qkv.weight, self)
        qkv = projection.linear(self.qkv, x, backend=self.backend)  # [B*nW, N, 3 * heads * d]
        p = self.attn_drop.p if self.training else 0.0
        table = self.relative_position_bias_table.to(qkv.dtype)
        x = ops.window_attention(qkv, self.num_heads, self.window_size, table, mask, self.scale, p,
                                 backend=self.backend)
        return self.proj_drop(projection.linear(self.proj, x, backend=self.backend))

    def extra_repr(self):
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"
