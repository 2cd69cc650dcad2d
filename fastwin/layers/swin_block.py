"""Swin Transformer block and patch merging, official parameter names, partition-free attention.

`SwinTransformerBlock` keeps the microsoft/Swin-Transformer constructor and state-dict names
(`norm1`, `attn.qkv`, `attn.proj`, `attn.relative_position_bias_table`, `norm2`, `mlp.fc1`,
`mlp.fc2`) but never partitions: the qkv Linear runs on the un-partitioned map and
`fastwin.ops.shifted_window_attention` does shift, padding, windowing, bias, mask and reverse.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from ..ops import PAD_ORDERS
from ..utils import pair
from . import checks, projection
from .drop import DropPath
from .mlp import Mlp
from .window_attention import WindowAttention

__all__ = ["PatchMerging", "SwinTransformerBlock", "effective_window"]


def effective_window(
    resolution: Optional[Tuple[int, int]], window_size, shift_size
) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """The window and shift a block really uses on a map of `resolution`.

    Per dimension: when the map is not larger than the window, the window shrinks to the map and the
    shift in that dimension becomes 0 (timm's rule; it equals the official `min(resolution) <= window`
    rule on square maps, e.g. Swin-T stage 4 at 224 is a 7x7 unshifted window).

    Args:
        resolution: (H, W) of the feature map, or None to keep the window as given.
        window_size: Wh or (Wh, Ww). shift_size: s or (sh, sw).
    Returns:
        ((Wh, Ww), (sh, sw)).
    """
    window = pair("window_size", window_size)
    shift = pair("shift_size", shift_size, allow_zero=True)
    if resolution is None:
        return window, shift
    res = pair("input_resolution", resolution)
    window = tuple(r if r <= w else w for r, w in zip(res, window))
    shift = tuple(0 if r <= w else s for r, w, s in zip(res, window, shift))
    return window, shift


def _set_common(blk: nn.Module, dim, input_resolution, num_heads, mlp_ratio, pad_order: str) -> None:
    if pad_order not in PAD_ORDERS:
        raise ValueError(f"pad_order must be one of {PAD_ORDERS}, got {pad_order!r}")
    blk.dim = dim
    blk.input_resolution = None if input_resolution is None else pair("input_resolution", input_resolution)
    blk.num_heads = num_heads
    blk.mlp_ratio = mlp_ratio
    blk.pad_order = pad_order


def block_settings(blk: nn.Module, dim, input_resolution, num_heads, mlp_ratio, pad_order: str, window_size,
                   shift_size, always_partition: bool) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """Validate and set a (V1 or V2) block's plain settings; returns its effective (window, shift)."""
    _set_common(blk, dim, input_resolution, num_heads, mlp_ratio, pad_order)
    window, shift = effective_window(None if always_partition else blk.input_resolution, window_size, shift_size)
    if shift[0] >= window[0] or shift[1] >= window[1]:
        raise ValueError(f"shift_size {shift} must be smaller than window_size {window} in each dim")
    blk.window_size, blk.shift_size = window, shift
    return window, shift


def block_shell(cls, attn: nn.Module, mlp: nn.Module, window_size, shift_size, input_resolution,
                pad_order: str) -> nn.Module:
    """An initialised-but-empty `cls` block with the settings `from_modules` derives (V1 and V2)."""
    blk = cls.__new__(cls)
    nn.Module.__init__(blk)
    _set_common(blk, attn.dim, input_resolution, attn.num_heads,
                getattr(getattr(mlp, "fc1", None), "out_features", 0) / attn.dim, pad_order)
    blk.window_size = pair("window_size", window_size)
    blk.shift_size = pair("shift_size", shift_size, allow_zero=True)
    if blk.window_size != attn.window_size:
        raise ValueError(f"window_size {blk.window_size} differs from the attention's {attn.window_size}")
    return blk


def drop_saved_shift_mask(state_dict, prefix: str) -> None:
    """Official checkpoints save the shift mask as a buffer; fastwin derives it inside the op."""
    state_dict.pop(prefix + "attn_mask", None)


def as_map(x: torch.Tensor, resolution, what: str) -> torch.Tensor:
    """[B, L, C] -> [B, H, W, C] using the known resolution; [B, H, W, C] passes through."""
    if x.dim() == 4:
        return x
    if resolution is None:
        raise ValueError(f"{what} got [B, L, C] input of shape {tuple(x.shape)} but has no input_resolution; "
                         f"pass [B, H, W, C] instead")
    H, W = resolution
    if x.shape[1] != H * W:
        raise ValueError(f"{what} input has L = {x.shape[1]} tokens but input_resolution {H}x{W} needs {H * W} "
                         f"(shape {tuple(x.shape)})")
    return x.view(x.shape[0], H, W, x.shape[2])


def like_input(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A [B, H', W', C'] result in the layout of the input `x`: flattened to [B, H' * W', C'] for [B, L, C]."""
    return y if x.dim() == 4 else y.flatten(1, 2)


def merge_2x2(x: torch.Tensor) -> torch.Tensor:
    """Patch merging's gather: [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 4C], odd maps zero-padded
    bottom/right; the 4C are x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2] (official order)."""
    B, H, W, C = x.shape
    if H % 2 or W % 2:
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
    Hh, Wh = (H + 1) // 2, (W + 1) // 2
    # [B, H/2, 2 (dy), W/2, 2 (dx), C] -> [B, H/2, W/2, dx, dy, C]: dy varies fastest, as the concat order
    return x.reshape(B, Hh, 2, Wh, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)


# torch.fx: these branch on the input's rank / size, so a traced graph calls them (one node each) and
# stays right for every input size and for both layouts.
for _fn in ("as_map", "like_input", "merge_2x2"):
    torch.fx.wrap(_fn)


class SwinTransformerBlock(nn.Module):
    """Swin block: x + W-MSA/SW-MSA(norm1(x)), then x + MLP(norm2(x)), partition-free.

    Args:
        dim: channels C.
        input_resolution: (H, W) of the map at construction (from the model's img_size), used to
            shrink the window (see `effective_window`) and to view `[B, L, C]` inputs; None keeps the
            window as given and accepts only `[B, H, W, C]`.
        num_heads: attention heads.
        window_size: Wh or (Wh, Ww) before shrinking. shift_size: s or (sh, sw), 0 for W-MSA.
        mlp_ratio: MLP hidden / C. qkv_bias: bias on the qkv Linear. qk_scale: overrides head_dim ** -0.5.
        drop: dropout after the projections. attn_drop: dropout on the attention weights.
        drop_path: stochastic depth rate. act_layer, norm_layer: MLP activation and norm classes.
        pad_order: "roll_pad" (timm, fastwin's models) or "pad_roll" (detection/segmentation code),
            the order of cyclic shift and zero padding on maps not divisible by the window.
        always_partition: never shrink the window to the map (timm's option; also used by `swap`,
            which passes the already effective window of a foreign block).
        head_dim: per-head channels if not dim // num_heads (timm's extension).
        backend: run this block's attention on this backend (None: the thread's choice); kept by
            `attn.backend`.

    forward: [B, H, W, C] -> [B, H, W, C] (any H, W: the op pads), or [B, L, C] -> [B, L, C] with
    L = H * W of `input_resolution`.
    """

    def __init__(self, dim, input_resolution, num_heads, window_size=7, shift_size=0, mlp_ratio=4.0,
                 qkv_bias=True, qk_scale=None, drop=0.0, attn_drop=0.0, drop_path=0.0, act_layer=nn.GELU,
                 norm_layer=nn.LayerNorm, pad_order: str = "roll_pad", always_partition: bool = False,
                 head_dim: Optional[int] = None, backend: Optional[str] = None):
        super().__init__()
        window, shift = block_settings(self, dim, input_resolution, num_heads, mlp_ratio, pad_order, window_size,
                                       shift_size, always_partition)

        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, window, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                    attn_drop=attn_drop, proj_drop=drop, head_dim=head_dim, backend=backend)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    @classmethod
    def from_modules(cls, attn: WindowAttention, norm1: nn.Module, norm2: nn.Module, mlp: nn.Module,
                     drop_path: Optional[nn.Module], window_size, shift_size, input_resolution=None,
                     pad_order: str = "roll_pad") -> "SwinTransformerBlock":
        """Assemble a block around existing modules, sharing (not copying) their parameters.

        Used by `fastwin.swap`: the foreign block's norms and MLP are kept as they are and only the
        attention path changes, so parameter objects (and any optimizer holding them) stay valid.
        `window_size` / `shift_size` are taken as already effective (no shrinking).
        """
        blk = block_shell(cls, attn, mlp, window_size, shift_size, input_resolution, pad_order)
        blk.norm1, blk.attn, blk.norm2, blk.mlp = norm1, attn, norm2, mlp
        blk.drop_path = drop_path if drop_path is not None else nn.Identity()
        return blk

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        drop_saved_shift_mask(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _attention(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Fused (S)W-MSA on a normalized map, plus `residual` in the projection's epilogue when given
        (callers pass one only when drop path and proj_drop pass through): [B, H, W, C] -> [B, H, W, C]."""
        attn = self.attn
        qkv = projection.linear(attn.qkv, x, backend=attn.backend)  # [B, H, W, 3 * heads * d], unpadded: padded tokens are the bias inside the op
        bias = None if attn.qkv.bias is None else attn.qkv.bias.to(qkv.dtype)
        table = attn.relative_position_bias_table.to(qkv.dtype)
        p = attn.attn_drop.p if self.training else 0.0
        x = ops.shifted_window_attention(qkv, self.num_heads, self.window_size, self.shift_size, table, bias,
                                         attn.scale, self.pad_order, p, backend=attn.backend)  # [B, H, W, heads * d]
        if residual is not None:
            return projection.linear(attn.proj, x, residual, attn.backend)
        return attn.proj_drop(projection.linear(attn.proj, x, backend=attn.backend))

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, W, C] -> [B, H, W, C]; the residual adds run in the projections' epilogues when drop
        path and dropout pass through (inference)."""
        if projection.passes_through(self.drop_path, self.attn.proj_drop):
            x = self._attention(self.norm1(x), residual=x)
        else:
            x = x + self.drop_path(self._attention(self.norm1(x)))
        if projection.passes_through(self.drop_path):  # swap() may have kept a foreign MLP: add_into checks
            return projection.add_into(self.mlp, Mlp, self.norm2(x), x)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        checks.features(x, self, self.dim, ("[B, H, W, C]", "[B, L, C]"))
        return like_input(self.forward_map(as_map(x, self.input_resolution, type(self).__name__)), x)

    def extra_repr(self):
        return (f"dim={self.dim}, input_resolution={self.input_resolution}, num_heads={self.num_heads}, "
                f"window_size={self.window_size}, shift_size={self.shift_size}, mlp_ratio={self.mlp_ratio}, "
                f"pad_order={self.pad_order!r}")


class PatchMerging(nn.Module):
    """Swin patch merging: 2x2 neighbourhoods -> LayerNorm(4C) -> Linear(4C -> 2C, no bias).

    The four tokens are concatenated as x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2];
    odd maps are zero-padded bottom/right first.

    Args:
        input_resolution: (H, W), needed only for `[B, L, C]` inputs (official signature); may be None.
        dim: input channels C. norm_layer: the norm class. out_dim: output channels (default 2C).

    forward: [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 2C], or [B, H*W, C] -> [B, ceil(H/2)*ceil(W/2), 2C].
    """

    def __init__(self, input_resolution, dim, norm_layer=nn.LayerNorm, out_dim: Optional[int] = None):
        super().__init__()
        self.input_resolution = None if input_resolution is None else pair("input_resolution", input_resolution)
        self.dim = dim
        self.out_dim = out_dim or 2 * dim
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        checks.features(x, self, self.dim, ("[B, H, W, C]", "[B, L, C]"))
        y = merge_2x2(as_map(x, self.input_resolution, type(self).__name__))  # [B, H/2, W/2, 4C]
        return like_input(projection.linear(self.reduction, self.norm(y)), x)

    def extra_repr(self):
        return f"input_resolution={self.input_resolution}, dim={self.dim}, out_dim={self.out_dim}"
