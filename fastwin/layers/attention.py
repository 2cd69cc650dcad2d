"""Global multi-head self-attention module (ViT/DeiT/UniFormer SABlock), timm parameter names."""
from __future__ import annotations

import torch.nn as nn

from .. import ops
from . import checks, projection


class Attention(nn.Module):
    """`qkv` Linear -> `fastwin.ops.attention` -> `proj` Linear.

    Args match timm's `Attention` / UniFormer's `Attention` (dim, num_heads, qkv_bias, qk_scale,
    attn_drop, proj_drop); `backend` pins this module's attention and projections to a backend (None:
    the thread's choice). forward(x [B, N, C], residual [B, N, C] | None) -> [residual +] attn(x), [B, N, C]; the
    add runs in proj's epilogue when proj_drop passes through.
    """

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0,
                 backend=None):
        super().__init__()
        self.backend = ops.backend_name(backend)
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x, residual=None):
        checks.features(x, self, self.qkv.in_features, ("[B, N, C]",))
        checks.like_weights(x, self.qkv.weight, self)
        p = self.attn_drop.p if self.training else 0.0
        qkv = projection.linear(self.qkv, x, backend=self.backend)
        x = ops.attention(qkv, self.num_heads, self.scale, p, backend=self.backend)  # [B, N, C]
        if projection.passes_through(self.proj_drop):
            return projection.linear(self.proj, x, residual, self.backend)
        y = self.proj_drop(self.proj(x))
        return y if residual is None else residual + y

    def extra_repr(self):
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}"
