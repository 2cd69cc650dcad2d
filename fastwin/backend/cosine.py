"""Swin V2 cosine attention on kernels that compute plain scaled-dot-product attention.

`softmax(cos(q, k) * s_h + bias)` equals `softmax((q / |q| * s_h) @ (k / |k|)^T + bias)`, so the
fused V1 kernels compute it with scale 1 from a qkv whose q and k parts were normalized per head and
q multiplied by the head's logit scale. Padded tokens carry `qkv_bias` as q/k/v, so the bias gets the
same transform. Autograd differentiates the transform; the kernel stays unchanged.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def _transform(t: torch.Tensor, num_heads: int, logit_scale: torch.Tensor) -> torch.Tensor:
    """t [..., 3 * heads * d] -> the same layout with q, k normalized per head and q scaled."""
    parts = t.unflatten(-1, (3, num_heads, -1))  # [..., 3, heads, d]
    q = F.normalize(parts[..., 0, :, :], dim=-1) * logit_scale[:, None]
    k = F.normalize(parts[..., 1, :, :], dim=-1)
    return torch.stack((q, k, parts[..., 2, :, :]), dim=-3).flatten(-3)


def cosine_as_dot(qkv: torch.Tensor, qkv_bias: Optional[torch.Tensor], num_heads: int, logit_scale: torch.Tensor):
    """(qkv, qkv_bias) for a scale-1 dot-product kernel that then computes cosine attention."""
    qkv_bias = None if qkv_bias is None else _transform(qkv_bias, num_heads, logit_scale)
    return _transform(qkv, num_heads, logit_scale), qkv_bias
