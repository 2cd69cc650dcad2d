"""Swap rules for official UniFormer blocks: fastwin blocks reusing the same submodules (same tensors)."""
from __future__ import annotations

import torch.nn as nn

from ..models.uniformer import CBlock, SABlock
from .core import register_swap
from .vit import convert_attention, match_attention


def _is_dwconv(conv, k: int) -> bool:
    """True for the official depthwise conv: k x k, stride 1, 'same' zero padding, groups == channels."""
    return (
        type(conv) is nn.Conv2d
        and conv.in_channels == conv.out_channels == conv.groups
        and conv.kernel_size == (k, k)
        and conv.stride == (1, 1)
        and conv.padding == (k // 2, k // 2)
        and conv.dilation == (1, 1)
        and conv.padding_mode == "zeros"
    )


def _is_layernorm_c(norm, dim) -> bool:
    return type(norm) is nn.LayerNorm and tuple(norm.normalized_shape) == (dim,)


def _match_cblock(m: nn.Module) -> bool:
    if type(m).__name__ != "CBlock" or isinstance(m, CBlock):
        return False
    children = dict(m.named_children())
    if set(children) != {"pos_embed", "norm1", "conv1", "conv2", "attn", "drop_path", "norm2", "mlp"}:
        return False
    if list(m.parameters(recurse=False)) or list(m.buffers(recurse=False)):
        return False
    return _is_dwconv(m.pos_embed, 3) and _is_dwconv(m.attn, 5)


def _convert_cblock(m: nn.Module) -> CBlock:
    dim = m.pos_embed.in_channels
    new = CBlock(dim, mlp_ratio=1.0)
    for name, child in m.named_children():  # same modules, so weights, BN statistics and settings carry over
        setattr(new, name, child)
    return new


def _match_sablock(m: nn.Module) -> bool:
    if type(m).__name__ != "SABlock" or isinstance(m, SABlock):
        return False
    children = dict(m.named_children())
    if set(children) != {"pos_embed", "norm1", "attn", "drop_path", "norm2", "mlp"}:
        return False
    dim = m.pos_embed.in_channels if isinstance(m.pos_embed, nn.Conv2d) else -1
    ls = getattr(m, "ls", None)
    own = {n for n, _ in m.named_parameters(recurse=False)}
    if ls not in (True, False) or own != ({"gamma_1", "gamma_2"} if ls else set()):
        return False
    if list(m.buffers(recurse=False)):
        return False
    return _is_dwconv(m.pos_embed, 3) and _is_layernorm_c(m.norm1, dim) and match_attention(m.attn)


def _convert_sablock(m: nn.Module) -> SABlock:
    dim = m.pos_embed.in_channels
    new = SABlock(dim, m.attn.num_heads, mlp_ratio=1.0, layer_scale=1.0 if m.ls else None)
    for name, child in m.named_children():
        setattr(new, name, convert_attention(child) if name == "attn" else child)
    if m.ls:
        new.gamma_1, new.gamma_2 = m.gamma_1, m.gamma_2
    return new


register_swap("uniformer.CBlock", _match_cblock, _convert_cblock)
register_swap("uniformer.SABlock", _match_sablock, _convert_sablock)
