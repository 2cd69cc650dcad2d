"""Swin window attention, written plainly with roll / pad / partition / reverse.

Layouts:
    qkv maps   [B, H, W, 3 * heads * d]   (the qkv Linear's output; channel order (3, heads, d))
    windows    [B * nW, N, C]             N = Wh * Ww, window-major order of `window_partition`
    bias table [(2*Wh-1) * (2*Ww-1), heads]

Two pad/roll orders exist in the wild (SPEC §2):
    "roll_pad" (timm, fastwin's models): roll the H x W map, then zero-pad bottom/right.
    "pad_roll" (detection/segmentation code): zero-pad to Hp x Wp, then roll the padded map.
In both, the shift mask is built over the padded Hp x Wp grid, and padded tokens are not masked:
they enter attention with q/k/v equal to the qkv bias (the Linear applied to zeros).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

MASK_VALUE = -100.0  # the official Swin mask value (not -inf): masked logits still get tiny weight

PAD_ORDERS = ("roll_pad", "pad_roll")


def window_partition(x: torch.Tensor, window_size: Tuple[int, int]) -> torch.Tensor:
    """Split a map into windows.

    Args:
        x: [B, H, W, C], H and W divisible by the window.
        window_size: (Wh, Ww).
    Returns:
        [B * nW, Wh, Ww, C], windows in row-major order per image.
    """
    B, H, W, C = x.shape
    wh, ww = window_size
    x = x.view(B, H // wh, wh, W // ww, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh, ww, C)


def window_reverse(windows: torch.Tensor, window_size: Tuple[int, int], H: int, W: int) -> torch.Tensor:
    """Inverse of `window_partition`: [B * nW, Wh, Ww, C] -> [B, H, W, C]."""
    wh, ww = window_size
    C = windows.shape[-1]
    x = windows.view(-1, H // wh, W // ww, wh, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


def relative_position_index(window_size: Tuple[int, int], device=None) -> torch.Tensor:
    """Index into the bias table for every (query, key) pair of a window.

    index[i, j] = (dy + Wh - 1) * (2*Ww - 1) + (dx + Ww - 1), with (dy, dx) = pos(i) - pos(j).

    Returns:
        [N, N] int64, N = Wh * Ww.
    """
    wh, ww = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(wh, device=device), torch.arange(ww, device=device),
                                        indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]  # [2, N, N]
    return (rel[0] + wh - 1) * (2 * ww - 1) + (rel[1] + ww - 1)


def relative_position_bias(table: torch.Tensor, window_size: Tuple[int, int]) -> torch.Tensor:
    """Gather the per-head bias: table [(2Wh-1)(2Ww-1), heads] -> [heads, N, N]."""
    n = window_size[0] * window_size[1]
    index = relative_position_index(window_size, table.device)
    return table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)


def region_ids(size: int, window: int, shift: int, device=None) -> torch.Tensor:
    """Region id (0, 1, 2) of every row (or column) of a padded, shifted axis of length `size`.

    Matches the official slices (0, -window), (-window, -shift), (-shift, None); when shift is 0
    the official loop gives one region, and the formula's split falls on a window boundary, so the
    resulting mask is identical.
    """
    i = torch.arange(size, device=device)
    return (i >= size - window).long() + (i >= size - shift).long() if shift > 0 else torch.zeros_like(i)


def shift_mask(
    Hp: int, Wp: int, window_size: Tuple[int, int], shift_size: Tuple[int, int], device=None,
    dtype=torch.float32,
) -> Optional[torch.Tensor]:
    """The shifted-window attention mask over a padded Hp x Wp map.

    Returns:
        [nW, N, N] with 0 inside a region and -100.0 across regions, or None if there is no shift.
    """
    if not any(shift_size):
        return None
    wh, ww = window_size
    ids = region_ids(Hp, wh, shift_size[0], device)[:, None] * 3 + region_ids(Wp, ww, shift_size[1], device)[None, :]
    ids = window_partition(ids[None, :, :, None], window_size).reshape(-1, wh * ww)  # [nW, N]
    mask = ids[:, None, :] != ids[:, :, None]
    return torch.zeros(mask.shape, device=device, dtype=dtype).masked_fill_(mask, MASK_VALUE)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_bias: Optional[torch.Tensor], scale: float,
           dropout_p: float = 0.0) -> torch.Tensor:
    """softmax((q * scale) @ k^T + attn_bias) @ v: [B, heads, N, d] -> [B, N, heads * d].

    Written out with plain differentiable ops instead of `F.scaled_dot_product_attention`, whose fused
    CPU kernel has no forward-mode (`torch.func.jvp`) or double derivative and returns a zero row where
    a NaN in q, k or the bias should give NaN (SPEC §6: NaN reaches every output it affects). A row
    whose logits are all -inf (a mask that masks every key) gives zeros and zero gradients, as SDPA's.
    float16/bfloat16 inputs are computed in float32 and rounded once, as the fused kernels (and SDPA's
    math path) do.

    Args:
        q, k, v: [B, heads, N, d]; attn_bias: broadcastable to [B, heads, N, N], in q's dtype, or None.
    """
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):  # in fp32, rounded once at the end (as SDPA's math path)
        q, k, v = q.float(), k.float(), v.float()
        attn_bias = None if attn_bias is None else attn_bias.float()
    logits = (q * scale) @ k.transpose(-2, -1)  # [B, heads, N, N]
    if attn_bias is not None:
        logits = logits + attn_bias
    # every logit -inf (a mask, or an infinite input): zeros, as the kernels give; NaN is not -inf
    if logits.shape[-1]:  # (amax needs a key)
        dead = logits.amax(-1, keepdim=True) == float("-inf")
        p = torch.softmax(logits.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0)  # not 0/0 for a dead row
    else:
        p = logits
    if dropout_p > 0:
        p = F.dropout(p, dropout_p)
    return merge_heads((p @ v).to(dtype))


def merge_heads(out: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, d] -> [B, N, heads * d].

    While exporting, the copy is explicit: the exporter decomposes SDPA after tracing into ops whose
    output strides differ from the traced kernel's, which would turn a traced free `view` invalid.
    """
    B, heads, N, d = out.shape
    out = out.transpose(1, 2)
    if _is_exporting():
        out = out.clone(memory_format=torch.contiguous_format)
    return out.reshape(B, N, heads * d)


def _is_exporting() -> bool:
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.5
    return bool(is_exporting is not None and is_exporting())


def cosine_qk(q: torch.Tensor, k: torch.Tensor, logit_scale: torch.Tensor):
    """Swin V2 cosine attention as a plain dot product: (q / |q| * logit_scale[h], k / |k|).

    `softmax(q' @ k'^T + bias)` with these equals timm's `(normalize(q) @ normalize(k)^T) * logit_scale
    + bias` up to rounding. q, k: [..., heads, N, d]; logit_scale: [heads], already clamped and
    exponentiated.
    """
    ls = logit_scale.to(q.dtype).reshape(-1, 1, 1)  # [heads, 1, 1]
    return F.normalize(q, dim=-1) * ls, F.normalize(k, dim=-1)


def window_attention_ref(
    qkv: torch.Tensor,
    rel_pos_bias_table: Optional[torch.Tensor],
    mask: Optional[torch.Tensor],
    num_heads: int,
    window_size: Tuple[int, int],
    scale: Optional[float] = None,
    dropout_p: float = 0.0,
    logit_scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Multi-head attention inside given windows (the official `WindowAttention.forward`).

    Arguments in the order of the op's schema (`fastwin.contract`), then the reference-only ones.

    Args:
        qkv: [B_, N, 3 * heads * d] with B_ = batch * nW, channel order (3, heads, d).
        rel_pos_bias_table: [(2*Wh-1)*(2*Ww-1), heads] or None.
        mask: [nW, N, N] added to the logits of window b_ % nW, or None.
        logit_scale: [heads] or None. Given: Swin V2 cosine attention, logits
            `(normalize(q) @ normalize(k)^T) * logit_scale[h] + bias` (L2 norm over d; `scale` unused).
    Returns:
        [B_, N, heads * d].
    """
    B_, N, C3 = qkv.shape
    d = C3 // (3 * num_heads)
    scale = d ** -0.5 if scale is None else scale
    q, k, v = qkv.view(B_, N, 3, num_heads, d).permute(2, 0, 3, 1, 4).unbind(0)  # each [B_, heads, N, d]
    if logit_scale is not None:
        q, k = cosine_qk(q, k, logit_scale)
        scale = 1.0
    bias = None
    if rel_pos_bias_table is not None:
        bias = relative_position_bias(rel_pos_bias_table, window_size).to(q.dtype)[None]  # [1, heads, N, N]
    if mask is not None:
        # Windows stay folded into the batch: the per-window mask is expanded to [B_, heads, N, N]
        # (as timm's fused path does), which keeps SDPA 4-D and measured faster on CPU than a
        # broadcast 5-D mask.
        nW = mask.shape[0]
        m = mask.to(q.dtype)[:, None]  # [nW, 1, N, N]
        m = m if bias is None else m + bias  # [nW, heads or 1, N, N]
        bias = m.unsqueeze(0).expand(B_ // nW, nW, m.shape[1], N, N).reshape(B_, m.shape[1], N, N)
    return attend(q, k, v, bias, scale, dropout_p)  # [B_, N, heads * d]


def _pad_with_bias(x: torch.Tensor, Hp: int, Wp: int, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Zero-pad [B, H, W, C] to [B, Hp, Wp, C], then set padded tokens to `bias` (Linear of zeros)."""
    B, H, W, C = x.shape
    if Hp == H and Wp == W:
        return x
    x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))
    if bias is not None:
        pad = torch.ones(Hp, Wp, 1, device=x.device, dtype=torch.bool)
        pad[:H, :W] = False
        x = torch.where(pad, bias.to(x.dtype), x)  # not x + pad * bias: 0 * NaN would reach real tokens
    return x


def shifted_window_attention_ref(
    qkv: torch.Tensor,
    rel_pos_bias_table: Optional[torch.Tensor],
    qkv_bias: Optional[torch.Tensor],
    num_heads: int,
    window_size: Tuple[int, int],
    shift_size: Tuple[int, int] = (0, 0),
    scale: Optional[float] = None,
    pad_roll: bool = False,
    dropout_p: float = 0.0,
    logit_scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Swin (shifted-)window attention on an un-partitioned qkv map.

    Equivalent to: (roll, pad) or (pad, roll) -> partition -> window attention with the relative
    position bias and the shift mask -> reverse -> (crop, roll back) or (roll back, crop).
    Arguments in the order of the op's schema (`fastwin.contract`), then the reference-only ones.

    Args:
        qkv: [B, H, W, 3 * heads * d], the qkv projection of the *unpadded* normalized map.
        window_size: (Wh, Ww), the effective window (already shrunk to the map if needed).
        shift_size: (sh, sw), 0 <= s < window.
        rel_pos_bias_table: [(2*Wh-1)*(2*Ww-1), heads] or None.
        qkv_bias: [3 * heads * d] or None; the q/k/v of padded tokens.
        pad_roll: False: "roll_pad" (timm: roll, then pad); True: "pad_roll" (detection/segmentation
            code: pad, then roll).
        logit_scale: [heads] or None: Swin V2 cosine attention (see `window_attention_ref`); padded
            tokens' q/k (the qkv bias) are normalized like every other token.
    Returns:
        [B, H, W, heads * d], at the un-shifted positions.
    """
    B, H, W, C3 = qkv.shape
    if qkv.numel() == 0:  # no windows to attend in; keep every input in the graph (zero gradients)
        out = qkv[..., : C3 // 3]
        for t in (rel_pos_bias_table, qkv_bias, logit_scale):
            out = out if t is None else out + t.sum() * 0
        return out.contiguous()
    wh, ww = window_size
    sh, sw = shift_size
    Hp, Wp = -(-H // wh) * wh, -(-W // ww) * ww
    shifted = sh > 0 or sw > 0
    if not pad_roll:
        x = torch.roll(qkv, shifts=(-sh, -sw), dims=(1, 2)) if shifted else qkv
        x = _pad_with_bias(x, Hp, Wp, qkv_bias)
    else:
        x = _pad_with_bias(qkv, Hp, Wp, qkv_bias)
        x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2)) if shifted else x
    windows = window_partition(x, window_size).reshape(-1, wh * ww, C3)  # [B*nW, N, 3C]
    mask = shift_mask(Hp, Wp, window_size, shift_size, device=qkv.device, dtype=qkv.dtype)
    out = window_attention_ref(windows, rel_pos_bias_table, mask, num_heads, window_size, scale, dropout_p,
                               logit_scale)
    out = window_reverse(out.view(-1, wh, ww, out.shape[-1]), window_size, Hp, Wp)  # [B, Hp, Wp, C]
    if not pad_roll:
        out = out[:, :H, :W]
        out = torch.roll(out, shifts=(sh, sw), dims=(1, 2)) if shifted else out
    else:
        out = torch.roll(out, shifts=(sh, sw), dims=(1, 2)) if shifted else out
        out = out[:, :H, :W]
    return out.contiguous()
