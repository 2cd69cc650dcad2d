"""Depthwise convolution (UniFormer's position embedding and local aggregator)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def dwconv2d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    residual: bool = False,
    layout: str = "NCHW",
) -> torch.Tensor:
    """Depthwise conv, stride 1, same padding, odd kernel: `dwconv(x)` or `x + dwconv(x)`.

    Args:
        x: [B, C, H, W] for layout "NCHW" (any memory format), [B, H, W, C] for layout "NHWC".
        weight: [C, 1, k, k].
        bias: [C] or None.
        residual: add the input to the result (UniFormer's dynamic position embedding).
    Returns:
        same shape and layout as `x`.
    """
    xin = x.permute(0, 3, 1, 2) if layout == "NHWC" else x
    if x.numel() == 0:  # F.conv2d refuses C = 0 and maps smaller than the kernel; the result is empty anyway
        return _empty_like_input(x, weight, bias)
    k = weight.shape[-1]
    out = F.conv2d(xin, weight, bias, padding=k // 2, groups=xin.shape[1])
    if residual:
        out = out + xin
    return out.permute(0, 2, 3, 1) if layout == "NHWC" else out


def _empty_like_input(x: torch.Tensor, *others: Optional[torch.Tensor]) -> torch.Tensor:
    """An empty result shaped like `x` that keeps every input in the graph (zero gradients), as the
    attention references do for empty maps."""
    out = x.clone()
    for t in others:
        out = out if t is None else out + t.sum() * 0
    return out


def dwconv_layernorm_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    ln_weight: Optional[torch.Tensor],
    ln_bias: Optional[torch.Tensor],
    eps: float = 1e-6,
    layout: str = "NCHW",
):
    """UniFormer SABlock entry: position embedding + residual, flatten to tokens, LayerNorm.

    Args:
        x: [B, C, H, W] ("NCHW", any memory format) or [B, H, W, C] ("NHWC").
        weight: [C, 1, k, k]; bias: [C] or None (the position-embedding conv).
        ln_weight, ln_bias: [C] or None (norm1); eps: LayerNorm epsilon.
    Returns:
        (tokens, normed): both [B, H*W, C]; tokens = flatten(x + dwconv(x)) is the residual stream,
        normed = LayerNorm(tokens) feeds the qkv projection.
    """
    y = dwconv2d_ref(x, weight, bias, residual=True, layout=layout)
    tokens = y.flatten(2).transpose(1, 2) if layout == "NCHW" else y.flatten(1, 2)
    if tokens.numel() == 0:  # layer_norm over C = 0 channels is an error; there is nothing to normalize
        return tokens, _empty_like_input(tokens, ln_weight, ln_bias)
    return tokens, F.layer_norm(tokens, (tokens.shape[-1],), ln_weight, ln_bias, eps)
