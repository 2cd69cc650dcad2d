"""Swap rules for Swin V2: timm's / the official V2 `WindowAttention` and whole V2 blocks.

A foreign V2 block (timm `SwinTransformerV2Block`: `[B, H, W, C]`, roll then pad; official
microsoft/Swin-Transformer V2 block: `[B, L, C]` at its `input_resolution`) becomes a fastwin
`SwinTransformerV2Block` sharing its modules, after a probe shows the two compute the same function.
The probe runs on a CPU twin with random weights, because freshly built V2 blocks start with zero
post-norms (timm), under which any attention would pass. Otherwise only the attention is replaced by
`WindowAttentionV2`, which computes the same function on given windows without a probe.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..layers.swin_v2_block import SwinTransformerV2Block, WindowAttentionV2, log_spaced_coords
from ..ops import relative_position_index, shift_mask
from .core import Probe, on_meta, pair_or_none, random_twin, register_planned_swap, register_swap, swin_block_parts
from .swin import window_contract

_ATTN_CHILDREN = {"qkv", "proj", "attn_drop", "proj_drop", "softmax", "cpb_mlp"}
_ATTN_PARAMS = {"logit_scale", "q_bias", "v_bias"}


def _is_cpb_mlp(mlp, heads: int) -> bool:
    """Linear(2, hidden) -> ReLU -> Linear(hidden, heads, no bias), the V2 position-bias MLP."""
    if not isinstance(mlp, nn.Sequential) or len(mlp) != 3:
        return False
    first, act, last = mlp
    return (isinstance(first, nn.Linear) and first.in_features == 2 and first.bias is not None
            and isinstance(act, nn.ReLU) and isinstance(last, nn.Linear) and last.bias is None
            and last.in_features == first.out_features and last.out_features == heads)


def _is_foreign_v2_attention(m) -> bool:
    """timm's / the official Swin V2 `WindowAttention`, recognised by structure (not by class name)."""
    if isinstance(m, WindowAttentionV2) or not isinstance(m, nn.Module):
        return False
    heads, window = getattr(m, "num_heads", None), pair_or_none(getattr(m, "window_size", None))
    qkv, proj, scale = (getattr(m, n, None) for n in ("qkv", "proj", "logit_scale"))
    if not isinstance(heads, int) or heads <= 0 or window is None:
        return False
    if not (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear) and isinstance(scale, nn.Parameter)):
        return False
    dim = qkv.in_features
    if qkv.bias is not None or qkv.out_features != 3 * dim or dim % heads:
        return False
    if proj.in_features != dim or proj.out_features != dim or proj.bias is None or scale.numel() != heads:
        return False
    if not _is_cpb_mlp(getattr(m, "cpb_mlp", None), heads):
        return False
    if set(dict(m.named_children())) - _ATTN_CHILDREN:
        return False
    if {n for n, _ in m.named_parameters(recurse=False)} - _ATTN_PARAMS:
        return False
    q_bias, v_bias = getattr(m, "q_bias", None), getattr(m, "v_bias", None)
    if (q_bias is None) != (v_bias is None):
        return False
    if q_bias is not None and (q_bias.shape != (dim,) or v_bias.shape != (dim,)):
        return False
    k_bias = getattr(m, "k_bias", None)
    if k_bias is not None and (not isinstance(k_bias, torch.Tensor) or k_bias.shape != (dim,)):
        return False
    coords = getattr(m, "relative_coords_table", None)
    wh, ww = window
    if not isinstance(coords, torch.Tensor) or tuple(coords.shape) != (1, 2 * wh - 1, 2 * ww - 1, 2):
        return False
    index = getattr(m, "relative_position_index", None)
    if index is not None:  # a non-standard index would be a different bias
        want = relative_position_index(window)
        if not isinstance(index, torch.Tensor) or tuple(index.shape) != tuple(want.shape):
            return False
        if not index.is_meta and not torch.equal(index.detach().cpu().long(), want):
            return False
    if k_bias is not None and not k_bias.is_meta and bool(k_bias.detach().ne(0).any()):
        return False  # the official k bias is zero; a learned one is another function
    return True


def _dropout_p(m) -> float:
    return float(m.p) if isinstance(m, nn.Dropout) else 0.0


def _convert_v2_attention(m) -> WindowAttentionV2:
    """fastwin `WindowAttentionV2` sharing the foreign module's parameters (same objects, not copies)."""
    window = pair_or_none(m.window_size)
    pretrained = pair_or_none(getattr(m, "pretrained_window_size", 0), allow_zero=True) or (0, 0)
    new = WindowAttentionV2(m.qkv.in_features, window, m.num_heads, qkv_bias=m.q_bias is not None,
                            qkv_bias_separate=bool(getattr(m, "qkv_bias_separate", False)),
                            attn_drop=_dropout_p(getattr(m, "attn_drop", None)),
                            proj_drop=_dropout_p(getattr(m, "proj_drop", None)), pretrained_window_size=pretrained)
    new.qkv, new.proj, new.cpb_mlp, new.logit_scale = m.qkv, m.proj, m.cpb_mlp, m.logit_scale
    if m.q_bias is not None:
        new.q_bias, new.v_bias = m.q_bias, m.v_bias
    ref = m.logit_scale
    new = new.to(device=ref.device)
    coords = m.relative_coords_table
    with torch.no_grad():  # the foreign coordinates as they are (any normalization), unless they hold no values
        new.relative_coords_table = (log_spaced_coords(window, pretrained, device=ref.device) if coords.is_meta
                                     else coords.detach().clone())
        if new.k_bias is not None:
            new.k_bias = torch.zeros(new.dim, device=ref.device, dtype=new.k_bias.dtype)
    return new


def _attention_twin(m) -> nn.Module:
    """`random_twin` of a V2 attention; on meta, its derived buffers as the constructors make them."""
    twin = random_twin(m)
    if not on_meta(m):
        return twin
    window = pair_or_none(twin.window_size)
    pretrained = pair_or_none(getattr(twin, "pretrained_window_size", 0), allow_zero=True) or (0, 0)
    with torch.no_grad():
        twin.relative_coords_table.copy_(log_spaced_coords(window, pretrained))
        if getattr(twin, "k_bias", None) is not None:
            twin.k_bias.zero_()
    return twin


# ------------------------------------------------------------------------------------------------ blocks

def _block_parts(m):
    """(attn, norm1, norm2, mlp, drop_path1, drop_path2, window, shift) of a Swin V2 block, or None."""
    parts = swin_block_parts(m, SwinTransformerV2Block,
                             lambda a: isinstance(a, WindowAttentionV2) or _is_foreign_v2_attention(a))
    if parts is None:
        return None
    attn, norm1, norm2, mlp, window, shift = parts
    dp1 = getattr(m, "drop_path1", None) or getattr(m, "drop_path", None)
    dp2 = getattr(m, "drop_path2", None) or getattr(m, "drop_path", None)
    return attn, norm1, norm2, mlp, dp1, dp2, window, shift


def _random_twin(m: nn.Module) -> nn.Module:
    """A CPU fp32 `random_twin` of block `m` (post-norms around 1, so attention matters), its logit
    scales around log(10); meta blocks get their derived buffers recomputed (coordinates, zero k bias,
    shift mask)."""
    meta = on_meta(m)
    twin = random_twin(m).float()  # logit scales around log(10) already (`randomize_parameters_`)
    with torch.no_grad():
        if meta:
            attn = twin.attn
            window = pair_or_none(attn.window_size)
            pretrained = pair_or_none(getattr(attn, "pretrained_window_size", 0), allow_zero=True) or (0, 0)
            attn.relative_coords_table.copy_(log_spaced_coords(window, pretrained))
            if getattr(attn, "k_bias", None) is not None:
                attn.k_bias.zero_()
            mask, res = getattr(twin, "attn_mask", None), pair_or_none(getattr(twin, "input_resolution", None))
            shift = pair_or_none(getattr(twin, "shift_size", None), allow_zero=True)
            if isinstance(mask, torch.Tensor) and res is not None and shift is not None:
                want = shift_mask(res[0], res[1], window, shift)
                if want is not None and want.shape == mask.shape:
                    mask.copy_(want)
    return twin


def _assemble(m, parts, res, pad_order="roll_pad") -> SwinTransformerV2Block:
    attn, norm1, norm2, mlp, dp1, dp2, window, shift = parts
    new_attn = attn if isinstance(attn, WindowAttentionV2) else _convert_v2_attention(attn)
    return SwinTransformerV2Block.from_modules(new_attn, norm1, norm2, mlp, dp1, dp2, window, shift, res, pad_order)


def _plan_block(m) -> Optional[SwinTransformerV2Block]:
    """A verified fastwin V2 block around `m`'s own modules, or None when it does not match safely."""
    parts = _block_parts(m)
    res = pair_or_none(getattr(m, "input_resolution", None))
    if parts is None or res is None:
        return None
    twin = _random_twin(m)
    twin_parts = _block_parts(twin)
    if twin_parts is None:
        return None
    C = twin_parts[0].qkv.in_features
    gen = torch.Generator().manual_seed(1)
    H, W = res
    x = torch.randn(2, H, W, C, generator=gen)
    sizes = [(H, W)]
    if getattr(m, "dynamic_mask", False):  # also any other size: one not divisible by the window
        sizes.append((H + 3, W + 5))
    twin.eval()
    try:
        with torch.no_grad():
            y = twin(x)
            nhwc = isinstance(y, torch.Tensor) and y.shape == x.shape
            if not nhwc:
                x = x.flatten(1, 2)
                y = twin(x)
                sizes = sizes[:1]  # [B, L, C] blocks run at their input_resolution only
            inputs = [(x, y)]
            for size in sizes[1:]:
                xs = torch.randn(2, *size, C, generator=gen)
                inputs.append((xs, twin(xs)))
    except Exception:  # the foreign block refused the probe input: not a match
        return None
    cand = _assemble(twin, twin_parts, res).eval()
    with torch.no_grad():
        if not all(Probe(twin).close(cand(xi), yi) for xi, yi in inputs):
            return None
    return _assemble(m, parts, res)


register_planned_swap("swin_v2_block", _block_parts, _plan_block)
register_swap("swin_v2_window_attention", _is_foreign_v2_attention, _convert_v2_attention, window_contract,
              _attention_twin)
