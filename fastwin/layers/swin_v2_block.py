"""Swin Transformer V2 attention, block and patch merging with timm's parameter names, partition-free.

What V2 (Liu et al., CVPR 2022) changes in a V1 block, and how it maps onto fastwin's ops:
- scaled cosine attention: logits = cos(q, k) * exp(min(logit_scale, log 100)) per head. The ops take
  the already clamped and exponentiated multipliers as `logit_scale=[heads]`;
- log-spaced continuous position bias: a 2 -> 512 -> heads MLP (`cpb_mlp`) on log-spaced relative
  coordinates, `16 * sigmoid(.)`. It is evaluated once per forward into an ordinary bias table
  `[(2Wh-1)(2Ww-1), heads]`, which the ops gather as for V1;
- qkv bias split into `q_bias`, a zero (non-learned) `k_bias` buffer and `v_bias`;
- residual post-norm: `x + norm1(attn(x))`, `x + norm2(mlp(x))`; the attention sees the un-normalized
  map, so padded tokens carry exactly the qkv bias, as the ops assume;
- patch merging: Linear(4C -> 2C) first, then LayerNorm(2C).

State-dict names equal timm's `swin_transformer_v2` (`attn.{logit_scale,cpb_mlp.0,cpb_mlp.2,qkv,q_bias,
v_bias,proj}`, `norm1`, `mlp.fc1`, `mlp.fc2`, `norm2`; `downsample.{reduction,norm}`).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from ..ops import relative_position_index
from ..utils import pair
from . import checks
from .drop import DropPath
from .mlp import Mlp
from .swin_block import as_map, block_settings, block_shell, drop_saved_shift_mask, like_input, merge_2x2

__all__ = ["PatchMergingV2", "SwinTransformerV2Block", "WindowAttentionV2", "cpb_bias_table", "log_spaced_coords",
           "logit_multiplier"]

for _fn in ("as_map", "like_input", "merge_2x2"):  # leaves under torch.fx here too (see swin_block)
    torch.fx.wrap(_fn)

LOGIT_SCALE_MAX = math.log(1.0 / 0.01)  # logit multipliers are capped at 100
CPB_HIDDEN = 512  # hidden width of the continuous position bias MLP


def log_spaced_coords(window_size: Tuple[int, int], pretrained_window_size: Tuple[int, int] = (0, 0),
                      device=None, dtype=torch.float32) -> torch.Tensor:
    """Relative coordinates of a window, log-spaced, the input of the position-bias MLP.

    Offsets (dy, dx) in [-(W-1), W-1] are scaled to [-8, 8] by the pretraining window (or the window
    itself), then mapped to sign(t) * log2(|t| + 1) / log2(8).

    Returns:
        [1, 2*Wh-1, 2*Ww-1, 2] (dy, dx) in `dtype`.
    """
    wh, ww = window_size
    ref = pretrained_window_size if pretrained_window_size[0] > 0 else window_size
    dy = torch.arange(-(wh - 1), wh, device=device, dtype=torch.float32)
    dx = torch.arange(-(ww - 1), ww, device=device, dtype=torch.float32)
    t = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1)  # [2Wh-1, 2Ww-1, 2]
    # A 1-wide window has only offset 0; dividing by 1 there keeps it 0 instead of 0/0.
    t = t / torch.tensor([max(ref[0] - 1, 1), max(ref[1] - 1, 1)], device=device, dtype=torch.float32) * 8
    t = torch.sign(t) * torch.log2(t.abs() + 1.0) / math.log2(8)
    return t[None].to(dtype)


def cpb_bias_table(cpb_mlp: nn.Module, coords: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The continuous position bias as an ordinary bias table (also for foreign V2 modules, `fastwin.swap`).

    Args:
        cpb_mlp: the position-bias MLP, 2 -> hidden -> heads; its first parameter sets the dtype.
        coords: [1, 2*Wh-1, 2*Ww-1, 2] log-spaced relative coordinates (`log_spaced_coords`).
        num_heads: heads.
    Returns:
        [(2Wh-1)(2Ww-1), heads] = 16 * sigmoid(cpb_mlp(coords)).
    """
    coords = coords.to(next(cpb_mlp.parameters()).dtype)
    return 16 * torch.sigmoid(cpb_mlp(coords).view(-1, num_heads))


def logit_multiplier(logit_scale: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Cosine-attention multipliers from the learned log scale: [heads] (or [heads, 1, 1]) -> [heads],
    exp(min(logit_scale, log 100)).

    Finite whenever the parameter has no NaN (clamped, then exp), so its values are checked once per
    parameter update (`ops.checks.vouch_finite`), not by every op call.
    """
    multiplier = torch.clamp(logit_scale, max=LOGIT_SCALE_MAX).exp().view(num_heads)
    return ops.checks.vouch_finite("logit_scale", logit_scale, multiplier, "an inf or NaN multiplier makes the logits NaN")


class WindowAttentionV2(nn.Module):
    """Swin V2 window attention: cosine attention, continuous position bias, timm's names and
    `forward(x, mask=None)`; a drop-in for timm's / the official V2 `WindowAttention`.

    Args:
        dim: channels C (= heads * head_dim).
        window_size: Wh or (Wh, Ww).
        num_heads: heads.
        qkv_bias: learn `q_bias` and `v_bias` (k has a fixed zero bias).
        qkv_bias_separate: timm's switch to add the bias after the projection (same function).
        attn_drop, proj_drop: dropout on the attention weights / the output.
        pretrained_window_size: window the position-bias MLP was trained with (0: this window).
        backend: run this module's attention on this backend (None: the thread's choice).

    forward(x [B*nW, N, C], mask [nW, N, N] | None) -> [B*nW, N, C]
    """

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, qkv_bias_separate=False, attn_drop=0.0,
                 proj_drop=0.0, pretrained_window_size=(0, 0), backend: Optional[str] = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.backend = ops.backend_name(backend)
        self.dim = dim
        self.window_size = pair("window_size", window_size)
        self.pretrained_window_size = pair("pretrained_window_size", pretrained_window_size, allow_zero=True)
        self.num_heads = num_heads
        self.qkv_bias_separate = qkv_bias_separate
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, CPB_HIDDEN, bias=True), nn.ReLU(inplace=True),
                                     nn.Linear(CPB_HIDDEN, num_heads, bias=False))
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.k_bias = self.v_bias = None
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # Derived from the geometry, so not saved (official checkpoints carry them; loading drops them).
        self.register_buffer("relative_coords_table",
                             log_spaced_coords(self.window_size, self.pretrained_window_size), persistent=False)
        self.register_buffer("relative_position_index", relative_position_index(self.window_size), persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("relative_coords_table", "relative_position_index", "k_bias"):
            state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def qkv_bias(self) -> Optional[torch.Tensor]:
        """[3 * C]: (q_bias, 0, v_bias), or None without bias."""
        if self.q_bias is None:
            return None
        k_bias = self.k_bias if self.k_bias is not None else torch.zeros_like(self.v_bias)
        return torch.cat((self.q_bias, k_bias, self.v_bias))

    def project_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """[..., C] -> [..., 3 * C], channel order (3, heads, d)."""
        bias = self.qkv_bias()
        if bias is None:
            return self.qkv(x)
        if self.qkv_bias_separate:
            return self.qkv(x) + bias
        return F.linear(x, self.qkv.weight, bias)

    def bias_table(self) -> torch.Tensor:
        """The continuous position bias as a table: [(2Wh-1)(2Ww-1), heads] = 16 * sigmoid(MLP(coords))."""
        return cpb_bias_table(self.cpb_mlp, self.relative_coords_table, self.num_heads)

    def logit_multiplier(self) -> torch.Tensor:
        """[heads]: exp(min(logit_scale, log 100))."""
        return logit_multiplier(self.logit_scale, self.num_heads)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        wh, ww = self.window_size
        checks.features(x, self, self.dim, ("[B*nW, N, C]",))
        checks.window_tokens(x, self, self.window_size)
        checks.window_mask(mask, x, wh * ww, self)
        checks.like_weights(x, self.qkv.weight, self)
        qkv = self.project_qkv(x)  # [B*nW, N, 3C]
        p = self.attn_drop.p if self.training else 0.0
        x = ops.window_attention(qkv, self.num_heads, self.window_size, self.bias_table().to(qkv.dtype), mask,
                                 None, p, logit_scale=self.logit_multiplier(), backend=self.backend)
        return self.proj_drop(self.proj(x))

    def extra_repr(self):
        return (f"dim={self.dim}, window_size={self.window_size}, pretrained_window_size="
                f"{self.pretrained_window_size}, num_heads={self.num_heads}")


class SwinTransformerV2Block(nn.Module):
    """Swin V2 block: x + norm1(W-MSA/SW-MSA(x)), then x + norm2(MLP(x)), partition-free.

    Args:
        dim, input_resolution, num_heads, window_size, shift_size, mlp_ratio, qkv_bias: as V1's
            `SwinTransformerBlock` (the window shrinks to maps not larger than it, shift 0 there).
        always_partition: never shrink the window (timm's option).
        proj_drop: dropout after the projections. attn_drop: attention dropout. drop_path: stochastic depth.
        act_layer, norm_layer: MLP activation and norm classes.
        pretrained_window_size: window the position-bias MLP was trained with (0: this window).
        pad_order: "roll_pad" (timm) or "pad_roll" on maps not divisible by the window.
        backend: run this block's attention on this backend (None: the thread's choice).

    forward: [B, H, W, C] -> [B, H, W, C] (any H, W), or [B, L, C] with L = H * W of `input_resolution`.
    """

    def __init__(self, dim, input_resolution, num_heads, window_size=7, shift_size=0, always_partition=False,
                 mlp_ratio=4.0, qkv_bias=True, proj_drop=0.0, attn_drop=0.0, drop_path=0.0, act_layer=nn.GELU,
                 norm_layer=nn.LayerNorm, pretrained_window_size=0, pad_order: str = "roll_pad",
                 backend: Optional[str] = None):
        super().__init__()
        window, shift = block_settings(self, dim, input_resolution, num_heads, mlp_ratio, pad_order, window_size,
                                       shift_size, always_partition)

        self.attn = WindowAttentionV2(dim, window, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                      proj_drop=proj_drop, pretrained_window_size=pair(
                                          "pretrained_window_size", pretrained_window_size, allow_zero=True),
                                      backend=backend)
        self.norm1 = norm_layer(dim)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.norm2 = norm_layer(dim)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    @classmethod
    def from_modules(cls, attn: WindowAttentionV2, norm1: nn.Module, norm2: nn.Module, mlp: nn.Module,
                     drop_path1: Optional[nn.Module], drop_path2: Optional[nn.Module], window_size, shift_size,
                     input_resolution=None, pad_order: str = "roll_pad") -> "SwinTransformerV2Block":
        """Assemble a block around existing modules, sharing (not copying) their parameters (`fastwin.swap`).

        `window_size` / `shift_size` are taken as already effective (no shrinking).
        """
        blk = block_shell(cls, attn, mlp, window_size, shift_size, input_resolution, pad_order)
        blk.attn, blk.norm1, blk.mlp, blk.norm2 = attn, norm1, mlp, norm2
        blk.drop_path1 = drop_path1 if drop_path1 is not None else nn.Identity()
        blk.drop_path2 = drop_path2 if drop_path2 is not None else nn.Identity()
        return blk

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        drop_saved_shift_mask(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        """Fused (S)W-MSA with cosine attention on the (un-normalized) map: [B, H, W, C] -> same."""
        attn = self.attn
        qkv = attn.project_qkv(x)  # [B, H, W, 3C], unpadded: padded tokens are the bias inside the op
        bias = attn.qkv_bias()
        bias = None if bias is None else bias.to(qkv.dtype)
        p = attn.attn_drop.p if self.training else 0.0
        x = ops.shifted_window_attention(qkv, self.num_heads, self.window_size, self.shift_size,
                                         attn.bias_table().to(qkv.dtype), bias, None, self.pad_order, p,
                                         logit_scale=attn.logit_multiplier(), backend=attn.backend)  # [B, H, W, C]
        return attn.proj_drop(attn.proj(x))

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, W, C] -> [B, H, W, C]."""
        x = x + self.drop_path1(self.norm1(self._attention(x)))
        return x + self.drop_path2(self.norm2(self.mlp(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        checks.features(x, self, self.dim, ("[B, H, W, C]", "[B, L, C]"))
        return like_input(self.forward_map(as_map(x, self.input_resolution, type(self).__name__)), x)

    def extra_repr(self):
        return (f"dim={self.dim}, input_resolution={self.input_resolution}, num_heads={self.num_heads}, "
                f"window_size={self.window_size}, shift_size={self.shift_size}, mlp_ratio={self.mlp_ratio}, "
                f"pad_order={self.pad_order!r}")


class PatchMergingV2(nn.Module):
    """Swin V2 patch merging: 2x2 neighbourhoods -> Linear(4C -> out_dim, no bias) -> norm(out_dim).

    The four tokens are concatenated as x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2];
    odd maps are zero-padded bottom/right first.

    forward: [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), out_dim]
    """

    def __init__(self, dim, out_dim: Optional[int] = None, norm_layer=nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.out_dim = out_dim or 2 * dim
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)
        self.norm = norm_layer(self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        checks.features(x, self, self.dim, ("[B, H, W, C]",))
        return self.norm(self.reduction(merge_2x2(x)))  # [B, H/2, W/2, 4C] -> out_dim

    def extra_repr(self):
        return f"dim={self.dim}, out_dim={self.out_dim}"
