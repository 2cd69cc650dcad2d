"""Swap rules for Swin v1: official / timm / detection-style `WindowAttention` and whole blocks.

A foreign block becomes a fastwin `SwinTransformerBlock` (the fused partition-free path) only after a
probe shows that it reproduces the block on random inputs in eval mode; otherwise only its attention
is replaced by `fastwin.WindowAttention`, which computes the same function on given windows.

Blocks on the meta device hold no values to probe: the probe runs on a CPU twin of the block (same
class and structure, random weights, the derived buffers `relative_position_index` / `attn_mask` set
to what the official constructors compute), and the fused block is then assembled from the meta
block's own modules, so meta goes in and meta comes out.
"""
from __future__ import annotations

import inspect
import re
from typing import Optional

import torch
import torch.nn as nn

from ..layers import SwinTransformerBlock, WindowAttention, checks
from ..ops import PAD_ORDERS, relative_position_index, shift_mask
from ..utils import ceil_div
from .core import (Contract, Probe, on_meta, pair_or_none, random_twin, register_planned_swap, register_swap,
                   swin_block_parts)

_ATTN_CHILDREN = {"qkv", "proj", "attn_drop", "proj_drop", "softmax"}


def _is_foreign_window_attention(m) -> bool:
    """An official/timm Swin v1 `WindowAttention`, recognised by structure (not by class name)."""
    if isinstance(m, WindowAttention) or not isinstance(m, nn.Module):
        return False
    table, qkv, proj = (getattr(m, n, None) for n in ("relative_position_bias_table", "qkv", "proj"))
    heads, window = getattr(m, "num_heads", None), pair_or_none(getattr(m, "window_size", None))
    if not (isinstance(table, nn.Parameter) and isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)):
        return False
    if not isinstance(heads, int) or heads <= 0 or window is None or qkv.out_features % (3 * heads):
        return False
    wh, ww = window
    if tuple(table.shape) != ((2 * wh - 1) * (2 * ww - 1), heads):
        return False
    if proj.in_features != qkv.out_features // 3 or proj.out_features != qkv.in_features or proj.bias is None:
        return False
    # Anything else holding state (Swin v2's logit_scale / cpb_mlp, q_bias ...) means another function.
    if set(dict(m.named_children())) - _ATTN_CHILDREN:
        return False
    if any(n != "relative_position_bias_table" for n, _ in m.named_parameters(recurse=False)):
        return False
    scale = getattr(m, "scale", None)
    if scale is not None and not isinstance(scale, (int, float)):
        return False
    index = getattr(m, "relative_position_index", None)
    if index is not None:  # a non-standard index would be a different bias
        expected = relative_position_index(window)
        if not isinstance(index, torch.Tensor) or tuple(index.shape) != tuple(expected.shape):
            return False
        # A meta index has no values: the shape and the standard constructor are all there is to go by.
        if not index.is_meta and not torch.equal(index.detach().cpu().long(), expected):
            return False
    return True


def _dropout_p(m) -> float:
    return float(m.p) if isinstance(m, nn.Dropout) else 0.0


def _convert_window_attention(m) -> WindowAttention:
    """fastwin.WindowAttention sharing the foreign module's parameters (same objects, not copies)."""
    heads, window = m.num_heads, pair_or_none(m.window_size)
    head_dim = m.qkv.out_features // (3 * heads)
    scale = getattr(m, "scale", None)
    new = WindowAttention(m.qkv.in_features, window, heads, qkv_bias=m.qkv.bias is not None,
                          qk_scale=float(scale) if scale else None, attn_drop=_dropout_p(getattr(m, "attn_drop", None)),
                          proj_drop=_dropout_p(getattr(m, "proj_drop", None)), head_dim=head_dim)
    new.qkv, new.proj = m.qkv, m.proj
    new.relative_position_bias_table = m.relative_position_bias_table
    ref = m.relative_position_bias_table
    return new.to(device=ref.device)


class _SwinBlockHW(SwinTransformerBlock):
    """Detection/segmentation-style block: the caller sets `H`, `W` and calls `forward(x, mask_matrix)`.

    The mask argument is accepted for signature compatibility and not read: the op derives the same
    -100.0 shift mask over the padded map from region ids (verified by `swap`'s probe).
    """

    H: Optional[int] = None
    W: Optional[int] = None

    def forward(self, x: torch.Tensor, mask_matrix: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.H is None or self.W is None:
            raise ValueError("set block.H and block.W (the map size) before calling it, "
                             "as the detection BasicLayer does")
        checks.features(x, self, self.dim, ("[B, L, C]",))
        B, L, C = x.shape
        if L != self.H * self.W:
            raise ValueError(f"x must have L = H * W = {self.H} * {self.W} = {self.H * self.W} tokens (dim 1) for "
                             f"{type(self).__name__}, got shape {tuple(x.shape)}")
        return self.forward_map(x.view(B, self.H, self.W, C)).reshape(B, L, C)


def _source_pad_order(cls) -> Optional[str]:
    """Order of the first `roll(` and `pad(` in the block's forward (and the methods it calls).

    Returns "roll_pad", "pad_roll", "no_pad" (rolls but never pads: official classification code),
    or None when the source is unavailable or shows neither.
    """
    try:
        src = inspect.getsource(cls.forward)
        for name in dict.fromkeys(re.findall(r"self\.(\w+)\(", src)):
            fn = getattr(cls, name, None)
            if inspect.isfunction(fn) and name != "forward":
                src += inspect.getsource(fn)
    except (OSError, TypeError):
        return None
    src = "\n".join(line.split("#", 1)[0] for line in src.splitlines())  # ignore comments
    roll, pad = src.find("roll("), re.search(r"\bpad\(", src)
    if roll < 0:
        return None
    if pad is None:
        return "no_pad"
    return "roll_pad" if roll < pad.start() else "pad_roll"


def _block_parts(m):
    """(attn, norm1, norm2, mlp, drop_path, window, shift) of a Swin v1 block, or None."""
    parts = swin_block_parts(m, SwinTransformerBlock,
                             lambda a: isinstance(a, WindowAttention) or _is_foreign_window_attention(a))
    if parts is None:
        return None
    attn, norm1, norm2, mlp, window, shift = parts
    drop_path = getattr(m, "drop_path", None) or getattr(m, "drop_path1", None)
    return attn, norm1, norm2, mlp, drop_path, window, shift


def _cpu_twin(m: nn.Module) -> nn.Module:
    """`random_twin(m)` with the block's `attn_mask` set to what the official constructor computes over
    its `input_resolution` (so the -100 shift mask still decides)."""
    twin = random_twin(m)
    with torch.no_grad():
        parts, mask = _block_parts(twin), getattr(twin, "attn_mask", None)
        res = pair_or_none(getattr(twin, "input_resolution", None))
        if parts is not None and res is not None and isinstance(mask, torch.Tensor) and mask.is_floating_point():
            want = shift_mask(res[0], res[1], parts[5], parts[6])
            if want is not None and want.shape == mask.shape:
                mask.copy_(want)
    return twin


def window_contract(m: nn.Module, probe: Probe) -> Contract:
    """Partitioned windows [B*nW, N, C], with and without a [nW, N, N] mask; not a map [B, H, W, C]."""
    wh, ww = pair_or_none(m.window_size)
    C, N = m.qkv.in_features, wh * ww
    mask = torch.zeros(2, N, N, device=probe.device, dtype=probe.dtype)
    mask[1, :, : N // 2] = -100.0
    x = probe.randn(4, N, C)
    return Contract(accepts=[(x,), (x, mask)], refuses=[(probe.randn(1, wh, ww, C),)])


def _assemble(m, parts, cls, res, pad_order, new_attn=None) -> SwinTransformerBlock:
    """A fastwin block (`cls`) around foreign block `m`'s own modules (parts from `_block_parts`)."""
    attn, norm1, norm2, mlp, drop_path, window, shift = parts
    if new_attn is None:
        new_attn = attn if isinstance(attn, WindowAttention) else _convert_window_attention(attn)
    blk = cls.from_modules(new_attn, norm1, norm2, mlp, drop_path, window, shift, res, pad_order)
    if cls is _SwinBlockHW:
        blk.H, blk.W = getattr(m, "H", None), getattr(m, "W", None)
    return blk


def _plan_block(m) -> Optional[SwinTransformerBlock]:
    """Build a verified fastwin block for foreign block `m`, or None when it cannot be matched safely.

    The kind (detection `forward(x, mask_matrix)` with `H`/`W`, `[B, L, C]` official, `[B, H, W, C]`
    timm) and the pad/roll order are detected, and the candidate must reproduce `m` on random inputs:
    for detection blocks at a size not divisible by the window (so the order matters), for the others
    at their `input_resolution`. A block on the meta device is probed through its CPU twin.
    """
    parts = _block_parts(m)
    if parts is None:
        return None
    if on_meta(m):
        verified = _plan_block(_cpu_twin(m))
        if verified is None:
            return None
        return _assemble(m, parts, type(verified), verified.input_resolution, verified.pad_order)
    attn, window, shift = parts[0], parts[5], parts[6]
    params = list(inspect.signature(m.forward).parameters)
    detection = "mask_matrix" in params or (len(params) >= 2 and hasattr(m, "H") and hasattr(m, "W"))
    res = getattr(m, "input_resolution", None)
    if not detection and pair_or_none(res) is None:
        return None
    order = _source_pad_order(type(m))
    orders = ["roll_pad"] if order == "no_pad" else [order] if order in PAD_ORDERS else list(PAD_ORDERS)
    probe = Probe(m)
    new_attn = attn if isinstance(attn, WindowAttention) else _convert_window_attention(attn)
    C = new_attn.dim

    if detection:
        (wh, ww), sizes = window, [(window[0] + 3, window[1] + 5), (2 * window[0], window[1] + 1)]

        def call_orig(x, H, W):
            old = (getattr(m, "H", None), getattr(m, "W", None))
            m.H, m.W = H, W
            try:
                Hp, Wp = ceil_div(H, wh) * wh, ceil_div(W, ww) * ww
                mask_shift = shift if any(shift) else (wh // 2, ww // 2)  # what the parent layer passes
                mask = shift_mask(Hp, Wp, window, mask_shift, device=x.device, dtype=x.dtype)
                return m(x, mask)
            finally:
                m.H, m.W = old

        inputs = [(probe.randn(2, H * W, C), H, W) for H, W in sizes]
    else:
        H, W = pair_or_none(res)
        x4 = probe.randn(2, H, W, C)
        y4 = probe.run(lambda: m(x4))
        nhwc = isinstance(y4, torch.Tensor) and y4.shape == x4.shape
        inputs = [(x4 if nhwc else x4.flatten(1, 2), H, W)]

        def call_orig(x, H, W):
            return m(x)

    expected = [probe.run(lambda i=i: call_orig(*i)) for i in inputs]
    if any(e is None for e in expected):
        return None
    cls = _SwinBlockHW if detection else SwinTransformerBlock
    for pad_order in orders:
        cand = _assemble(m, parts, cls, None if detection else res, pad_order, new_attn)
        ok = True
        for (x, H, W), want in zip(inputs, expected):
            if detection:
                cand.H, cand.W = H, W
            got = probe.run(lambda c=cand, x=x: c(x), cand)  # called at once; bound for clarity
            ok = ok and probe.close(got, want)
        if ok:
            return _assemble(m, parts, cls, None if detection else res, pad_order, new_attn)
    return None


register_planned_swap("swin_block", _block_parts, _plan_block)
register_swap("swin_window_attention", _is_foreign_window_attention, _convert_window_attention, window_contract)
