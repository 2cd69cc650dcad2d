"""Swap rule for plain global attention: timm ViT/DeiT and UniFormer `Attention` -> fastwin's."""
from __future__ import annotations

import math

import torch.fx
import torch.nn as nn

from ..layers import Attention
from .core import Contract, Probe, register_swap


def refuse_mask(attn_mask, is_causal) -> None:
    """ValueError for a mask or causal attention, which the swapped attention does not compute.
    `torch.fx.wrap`ped: under tracing timm's `attn_mask` argument is a Proxy, so the graph calls this
    check with the real value instead."""
    if attn_mask is not None or is_causal:
        raise ValueError("fastwin attention swapped into this model supports no attn_mask / is_causal")


torch.fx.wrap("refuse_mask")


class SwappedAttention(Attention):
    """`fastwin.layers.Attention` that also takes timm's `forward(x, attn_mask=None, is_causal=False)`."""

    def forward(self, x, attn_mask=None, is_causal=False):
        refuse_mask(attn_mask, is_causal)
        return super().forward(x)


_ALLOWED_CHILDREN = {"qkv": nn.Linear, "proj": nn.Linear, "attn_drop": nn.Dropout, "proj_drop": nn.Dropout,
                     "q_norm": nn.Identity, "k_norm": nn.Identity, "norm": nn.Identity}


def match_attention(m: nn.Module) -> bool:
    """A plain global MHSA (`qkv` Linear(C, 3C), `proj` Linear(C, C), `num_heads`, `scale`) with no
    q/k norm, gate, bias table or other extras fastwin would silently drop."""
    if type(m).__name__ != "Attention" or isinstance(m, Attention):
        return False
    children = dict(m.named_children())
    if "qkv" not in children or "proj" not in children:
        return False
    if any(type(c) is not _ALLOWED_CHILDREN.get(n) for n, c in children.items()):
        return False
    if list(m.parameters(recurse=False)) or list(m.buffers(recurse=False)) or getattr(m, "gate", None) is not None:
        return False
    heads, scale = getattr(m, "num_heads", None), getattr(m, "scale", None)
    if isinstance(heads, bool) or not isinstance(heads, int) or heads <= 0:
        return False
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        return False
    qkv, proj = m.qkv, m.proj
    dim = qkv.in_features
    if qkv.out_features != 3 * dim or proj.in_features != dim or proj.out_features != dim or proj.bias is None:
        return False
    return dim % heads == 0 and getattr(m, "head_dim", dim // heads) == dim // heads


def convert_attention(m: nn.Module) -> SwappedAttention:
    dim = m.qkv.in_features
    new = SwappedAttention(dim, m.num_heads, qkv_bias=m.qkv.bias is not None, qk_scale=float(m.scale))
    new.scale = float(m.scale)  # `qk_scale or default` would turn an explicit 0.0 into the default
    new.qkv, new.proj = m.qkv, m.proj  # the same modules: weights are shared, not copied
    for name in ("attn_drop", "proj_drop"):
        if hasattr(m, name):
            setattr(new, name, getattr(m, name))
    return new


def attention_contract(m: nn.Module, probe: Probe) -> Contract:
    """Tokens [B, N, C] (N odd, so no square map is implied); not a map [B, H, W, C] (VOLO, SAM-ViT,
    MetaFormer), [B, T, N, C] (NesT) or [B, C, H, W] (FastViT), which fastwin's attention refuses."""
    C = m.qkv.in_features
    return Contract(accepts=[(probe.randn(2, 5, C),)],
                    refuses=[(probe.randn(2, 2, 3, C),), (probe.randn(2, C, 2, 3),)])


register_swap("Attention", match_attention, convert_attention, attention_contract)
