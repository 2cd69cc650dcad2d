"""Global multi-head self-attention (UniFormer SABlocks, ViT/DeiT)."""
from __future__ import annotations

from typing import Optional

import torch

from .window import attend


def attention_ref(
    qkv: torch.Tensor, num_heads: int, scale: Optional[float] = None, dropout_p: float = 0.0
) -> torch.Tensor:
    """softmax((q * scale) @ k^T) @ v over all N tokens.

    Args:
        qkv: [B, N, 3 * heads * d], channel order (3, heads, d) as produced by the qkv Linear.
        scale: defaults to d ** -0.5.
    Returns:
        [B, N, heads * d].
    """
    B, N, C3 = qkv.shape
    d = C3 // (3 * num_heads)
    q, k, v = qkv.view(B, N, 3, num_heads, d).permute(2, 0, 3, 1, 4).unbind(0)  # [B, heads, N, d]
    return attend(q, k, v, None, d ** -0.5 if scale is None else scale, dropout_p)  # [B, N, heads * d]
