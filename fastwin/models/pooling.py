"""Global pooling of the classifier heads, with timm's pool names (`global_pool=`, `reset_classifier`).

Map models (Swin v1 / V2, UniFormer) pool a [B, H, W, C] or [B, C, H, W] map as timm's
`SelectAdaptivePool2d`; ViTs pool their tokens as timm's `global_pool_nlc`. `""` means no pooling:
`forward_head(pre_logits=True)` and, without a classifier, `forward` return the unpooled map / tokens.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["MAP_POOLS", "TOKEN_POOLS", "check_pool", "pool_map", "pool_tokens", "pooled_width"]

MAP_POOLS = ("", "avg", "max", "avgmax", "catavgmax")
TOKEN_POOLS = ("", "token", "avg", "max", "avgmax")


def check_pool(global_pool: str, allowed: Sequence[str], owner: str) -> str:
    """ValueError naming `owner` unless `global_pool` is one of `allowed` (timm's names for it)."""
    if global_pool not in allowed:
        raise ValueError(f"global_pool must be one of {tuple(allowed)} for {owner}, got {global_pool!r}")
    return global_pool


def pooled_width(num_features: int, global_pool: str) -> int:
    """Channels after pooling (`head_hidden_size`): doubled by "catavgmax" (average and max side by side)."""
    return 2 * num_features if global_pool == "catavgmax" else num_features


def pool_map(x: torch.Tensor, global_pool: str, dims=(1, 2)) -> torch.Tensor:
    """[B, H, W, C] (dims (1, 2)) or [B, C, H, W] (dims (2, 3)) -> [B, C] ([B, 2C] for "catavgmax");
    `""`: x unchanged."""
    if not global_pool:
        return x
    if global_pool == "avg":
        return x.mean(dim=dims)
    if global_pool == "max":
        return x.amax(dim=dims)
    avg, mx = x.mean(dim=dims), x.amax(dim=dims)
    return 0.5 * (avg + mx) if global_pool == "avgmax" else torch.cat([avg, mx], dim=1)


def pool_tokens(x: torch.Tensor, global_pool: str, num_prefix_tokens: int) -> torch.Tensor:
    """[B, prefix + N, D] -> [B, D]: the class token ("token") or a reduction over the patch tokens;
    `""`: x unchanged."""
    if not global_pool:
        return x
    if global_pool == "token":
        return x[:, 0]
    return pool_map(x[:, num_prefix_tokens:], global_pool, dims=1)
