"""What users would otherwise run, built once per case, for comparison in the same run (SPEC §8).

Every implementation takes the same inputs as `fastwin.ops.shifted_window_attention` and returns
the same tensor, so the benchmark can swap them freely:
    reference          fastwin's pure-PyTorch path (roll/pad/partition + SDPA with a dense float
                       mask of bias + shift mask: timm's `fused_attn` path)
    reference+compile  torch.compile of the reference
    official_matmul    the official Swin code path: explicit (q*scale) @ k^T, + bias + mask, softmax, @ v
    flex               FlexAttention on the partitioned windows, bias and mask in a score_mod (CUDA)
    triton/cuda/cpp    fastwin's fused backends
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

import fastwin
from fastwin.reference import window as W


def official_matmul(qkv, heads, window, shift, table, qkv_bias, pad_order="roll_pad"):
    B, H, Wd, C3 = qkv.shape
    wh, ww = window
    sh, sw = shift
    Hp, Wp = -(-H // wh) * wh, -(-Wd // ww) * ww
    x = torch.roll(qkv, (-sh, -sw), (1, 2)) if (sh or sw) else qkv
    x = W._pad_with_bias(x, Hp, Wp, qkv_bias)
    win = W.window_partition(x, window).reshape(-1, wh * ww, 3, heads, C3 // 3 // heads).permute(2, 0, 3, 1, 4)
    q, k, v = win.unbind(0)
    attn = (q * (C3 // 3 // heads) ** -0.5) @ k.transpose(-2, -1)
    attn = attn + W.relative_position_bias(table, window).unsqueeze(0)
    mask = W.shift_mask(Hp, Wp, window, shift, qkv.device, qkv.dtype)
    if mask is not None:
        nW = mask.shape[0]
        attn = attn.view(-1, nW, heads, wh * ww, wh * ww) + mask[None, :, None]
        attn = attn.view(-1, heads, wh * ww, wh * ww)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, wh, ww, C3 // 3)
    out = W.window_reverse(out, window, Hp, Wp)[:, :H, :Wd]
    return torch.roll(out, (sh, sw), (1, 2)) if (sh or sw) else out


def flex_available(device: torch.device) -> Optional[str]:
    if device.type != "cuda":
        return "FlexAttention baseline runs on CUDA only"
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return "this torch has no FlexAttention"
    return None


def make_flex(heads, window, shift, H, Wd):
    """Partition with roll/pad, then FlexAttention with bias + shift mask as a score_mod."""
    from torch.nn.attention.flex_attention import flex_attention

    wh, ww = window
    Hp, Wp = -(-H // wh) * wh, -(-Wd // ww) * ww
    flex = torch.compile(flex_attention, dynamic=False)
    state = {}

    def run(qkv, table, qkv_bias):
        B, _, _, C3 = qkv.shape
        d = C3 // 3 // heads
        if "bias" not in state or state["bias"].dtype != qkv.dtype:
            state["mask"] = W.shift_mask(Hp, Wp, window, shift, qkv.device, torch.float32)
            state["nW"] = (Hp // wh) * (Wp // ww)
        bias = W.relative_position_bias(table, window).float()  # [heads, N, N], differentiable
        mask, nW = state["mask"], state["nW"]

        def score_mod(score, b, h, q_idx, kv_idx):
            s = score + bias[h, q_idx, kv_idx]
            if mask is not None:
                s = s + mask[b % nW, q_idx, kv_idx]
            return s

        x = torch.roll(qkv, (-shift[0], -shift[1]), (1, 2)) if any(shift) else qkv
        x = W._pad_with_bias(x, Hp, Wp, qkv_bias)
        q, k, v = W.window_partition(x, window).reshape(-1, wh * ww, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        out = flex(q.contiguous(), k.contiguous(), v.contiguous(), score_mod=score_mod, scale=d ** -0.5)
        out = W.window_reverse(out.transpose(1, 2).reshape(-1, wh, ww, heads * d), window, Hp, Wp)[:, :H, :Wd]
        return torch.roll(out, shift, (1, 2)) if any(shift) else out

    return run


def window_impl(name: str, case, device: torch.device) -> Callable:
    """fn(qkv, table, qkv_bias) -> out for implementation `name`."""
    window, shift = (case.window, case.window), (case.shift, case.shift)
    if name == "official_matmul":
        return lambda q, t, b: official_matmul(q, case.heads, window, shift, t, b)
    if name == "flex":
        return make_flex(case.heads, window, shift, case.H, case.W)

    def op(q, t, b):
        return fastwin.ops.shifted_window_attention(q, case.heads, window, shift, t, b)

    backend = name.split("+")[0]
    compiled = torch.compile(op) if name.endswith("+compile") else op

    def run(q, t, b):
        with fastwin.set_backend(backend, strict=backend != "reference"):
            return compiled(q, t, b)

    return run
