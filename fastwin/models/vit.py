"""Vision Transformer ("An Image is Worth 16x16 Words"), parameter names as timm's VisionTransformer.

Class token, learned absolute position embedding (bicubically resampled for other input sizes, as
timm), pre-norm blocks whose attention runs `fastwin.ops.attention`, `token` or `avg` pooling.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .. import ops
from ..ops import inference
from ..layers import Attention, DropPath, Mlp, PatchEmbed
from .checkpoint import checkpoint_filter
from .features import check_image, check_output_fmt, feature_take_indices
from .pooling import TOKEN_POOLS, check_pool, pool_tokens
from .registry import (
    IMAGENET_INCEPTION_MEAN,
    IMAGENET_INCEPTION_STD,
    pretrained_cfg,
    register_model,
    register_pretrained_cfgs,
)

__all__ = ["VisionTransformer", "Block", "LayerScale", "resample_abs_pos_embed"]



def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def resample_abs_pos_embed(
    posemb: torch.Tensor,
    new_size: Sequence[int],
    old_size: Optional[Sequence[int]] = None,
    num_prefix_tokens: int = 1,
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """Resample a learned position embedding to another token grid (timm semantics).

    The prefix (class / distillation) embeddings are kept; the grid part is interpolated in fp32
    with `F.interpolate(mode=interpolation, antialias=antialias, align_corners=False)`.

    Args:
        posemb: [1, num_prefix_tokens + Ho * Wo, D].
        new_size: (Hn, Wn) token grid.
        old_size: (Ho, Wo); default: the square grid the token count implies.
        num_prefix_tokens: leading tokens without a grid position.

    Returns:
        [1, num_prefix_tokens + Hn * Wn, D], dtype of `posemb`.
    """
    new_size = _pair(new_size)
    n_grid = posemb.shape[1] - num_prefix_tokens
    if old_size is None:
        side = math.isqrt(n_grid)
        if side * side != n_grid:
            raise ValueError(f"cannot infer a square grid from {n_grid} position tokens; pass old_size")
        old_size = (side, side)
    old_size = _pair(old_size)
    if old_size[0] * old_size[1] != n_grid:
        raise ValueError(f"pos_embed has {n_grid} grid tokens, which is not old_size {old_size}")
    if tuple(old_size) == tuple(new_size):
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    dim = posemb.shape[-1]
    grid = grid.float().reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)  # [1, D, Ho, Wo]
    grid = F.interpolate(grid, size=new_size, mode=interpolation, antialias=antialias, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_size[0] * new_size[1], dim).to(posemb.dtype)
    return torch.cat([prefix, grid], dim=1)


torch.fx.wrap("resample_abs_pos_embed")  # size-dependent: a traced graph calls it, and so runs any grid


# ---------------------------------------------------------------------------------------------------
# block


class LayerScale(nn.Module):
    """Per-channel residual scaling (timm `LayerScale`, parameter `gamma`)."""

    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: `x + Attn(LN(x))`, then `x + Mlp(LN(x))` (timm names).

    forward: [B, N, C] -> [B, N, C]
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, proj_drop=0.0, attn_drop=0.0,
                 init_values=None, drop_path=0.0, act_layer=nn.GELU, norm_eps=1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


# ---------------------------------------------------------------------------------------------------
# model


def _patch_embed(img_size, patch_size, in_chans, embed_dim) -> nn.Module:
    return PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, flatten=False)


class VisionTransformer(nn.Module):
    """ViT with timm's parameter names and forward.

    Args:
        img_size: nominal input size; sets the position-embedding grid. Other sizes (multiples of
            the patch) work: the embedding is resampled bicubically on the fly.
        patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the usual.
        num_classes: head outputs (0: no head).
        global_pool: "token" (class token), "avg" / "max" / "avgmax" (over the patch tokens, with
            `fc_norm` instead of the final `norm`, as timm) or "" (no pooling).
        init_values: LayerScale init (None: no layer scale).
        class_token: prepend a class token.
        fc_norm: force (True) / forbid (False) the post-pool norm; None: timm's rule (avg -> True).
        drop_rate, pos_drop_rate, proj_drop_rate, attn_drop_rate, drop_path_rate: head dropout,
            dropout after the position embedding, projection/MLP dropout, attention dropout,
            stochastic depth (linear over blocks).
        embed_layer: `f(img_size, patch_size, in_chans, embed_dim) -> module` mapping
            [B, C, H, W] -> [B, h, w, D]; may define `grid_size(img_size)` (the hybrid does).
    """

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, global_pool="token",
                 embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True, init_values=None,
                 class_token=True, fc_norm=None, drop_rate=0.0, pos_drop_rate=0.0, proj_drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.0, embed_layer: Optional[Callable] = None, norm_eps=1e-6):
        super().__init__()
        check_pool(global_pool, TOKEN_POOLS, type(self).__name__)
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        use_fc_norm = global_pool in ("avg", "max", "avgmax") if fc_norm is None else fc_norm
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.in_chans = in_chans
        self.num_prefix_tokens = 1 if class_token else 0
        self.grad_checkpointing = False

        self.patch_embed = (embed_layer or _patch_embed)(img_size, patch_size, in_chans, embed_dim)
        img_size = _pair(img_size)
        if hasattr(self.patch_embed, "grid_size"):
            self.grid_size = tuple(self.patch_embed.grid_size(img_size))
        else:
            p = _pair(patch_size)
            self.grid_size = (img_size[0] // p[0], img_size[1] // p[1])
        num_patches = self.grid_size[0] * self.grid_size[1]
        reduction = img_size[0] // self.grid_size[0] if self.grid_size[0] else _pair(patch_size)[0]
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=reduction) for i in range(depth)]
        self.default_out_indices = 3  # timm's features_only default for ViTs: the last 3 blocks
        self.output_fmts = ("NCHW", "NHWC", "NLC")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + self.num_prefix_tokens, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # cpu: also under meta
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, proj_drop_rate, attn_drop_rate, init_values, dpr[i],
                  norm_eps=norm_eps)
            for i in range(depth)
        ])
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if not use_fc_norm else nn.Identity()
        self.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # -- timm-style surface --------------------------------------------------------------------------

    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        return self.head

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Parameter names to keep out of weight decay (timm's set)."""
        return {"pos_embed", "cls_token", "dist_token"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer-wise parameter groups for `timm.optim` (timm's ViT / DeiT matcher)."""
        return dict(
            stem=r"^cls_token|dist_token|pos_embed|patch_embed",  # tokens, position embedding, (hybrid) stem
            blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        )

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        """New head Linear(embed_dim, num_classes) (Identity for 0) and, unless None, the pooling
        (`""`: none, forward returns the tokens); the norms stay as built (timm)."""
        if global_pool is not None:
            check_pool(global_pool, TOKEN_POOLS, type(self).__name__)
            if global_pool == "token" and self.cls_token is None:
                raise ValueError("global_pool='token' needs the class token (class_token=True)")
            self.global_pool = global_pool
        self.num_classes = num_classes
        ref = self.pos_embed
        self.head = (nn.Linear(self.embed_dim, num_classes, device=ref.device, dtype=ref.dtype)
                     if num_classes > 0 else nn.Identity())

    def _prefix_tokens(self, batch: int):
        """Tokens prepended to the patch tokens, in checkpoint order."""
        return [] if self.cls_token is None else [self.cls_token.expand(batch, -1, -1)]

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, h, w, D] patch grid -> [B, prefix + h*w, D] with prefix tokens and position embedding."""
        B, h, w, D = x.shape
        pos = resample_abs_pos_embed(self.pos_embed, (h, w), self.grid_size, self.num_prefix_tokens)  # as is if equal
        x = torch.cat(self._prefix_tokens(B) + [x.reshape(B, h * w, D)], dim=1)
        return self.pos_drop(x + pos)

    def _check_input(self, x) -> None:
        check_image(x, self.in_chans, self)

    @inference.in_arena
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, Sequence[int]]] = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List, Tuple[torch.Tensor, List]]:
        """Forward that also returns block outputs (timm's backbone interface).

        Args:
            x: [B, C_in, H, W].
            indices: blocks to return (None: all; int n: the last n; or a sequence, negative from the end).
            return_prefix_tokens: return (map, prefix tokens [B, prefix, D]) pairs.
            norm: apply the final norm to every returned block output.
            stop_early: skip the blocks after the last one requested.
            output_fmt: "NCHW" ([B, D, h, w]), "NHWC" or "NLC" ([B, h*w, D]).
            intermediates_only: return only the list.
        Returns:
            the per-block patch-token maps (class/distillation tokens split off); with
            `intermediates_only=False`, `(final normalized tokens [B, prefix + N, D], maps)`.
        """
        check_output_fmt(output_fmt, self.output_fmts)
        self._check_input(x)
        take, last = feature_take_indices(len(self.blocks), indices)
        grid = self.patch_embed(x)  # [B, h, w, D]
        B, h, w, _ = grid.shape
        x = self._pos_embed(grid)
        blocks = self.blocks[:last + 1] if stop_early else self.blocks
        outs = []
        for i, blk in enumerate(blocks):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(ops.bound(blk), x, use_reentrant=False)
            else:
                x = blk(x)
            if i in take:
                outs.append(self.norm(x) if norm else x)
        maps = []
        for y in outs:
            prefix, tokens = y[:, :self.num_prefix_tokens], y[:, self.num_prefix_tokens:]
            if output_fmt != "NLC":
                tokens = tokens.reshape(B, h, w, -1)
                tokens = (tokens.permute(0, 3, 1, 2) if output_fmt == "NCHW" else tokens).contiguous()
            maps.append((tokens, prefix) if return_prefix_tokens and self.num_prefix_tokens else tokens)
        if intermediates_only:
            return maps
        return self.norm(x), maps

    def prune_intermediate_layers(self, indices: Union[int, Sequence[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the blocks after the last one `indices` needs (and the norm / head on request).

        Returns:
            the absolute block indices to take.
        """
        take, last = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:last + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.fc_norm = nn.Identity()
            self.reset_classifier(0)
        return take

    @inference.in_arena
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> normalized tokens [B, prefix + N, D]."""
        self._check_input(x)
        x = self._pos_embed(self.patch_embed(x))
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(ops.bound(blk), x, use_reentrant=False)  # recompute on this backend
            else:
                x = blk(x)
        return self.norm(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return pool_tokens(x, self.global_pool, self.num_prefix_tokens)  # [B, D]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens [B, prefix + N, D] -> pooled [B, D] -> logits [B, num_classes] (unless `pre_logits`)."""
        x = self.head_drop(self.fc_norm(self.pool(x)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------------
# checkpoint filter


@checkpoint_filter(VisionTransformer)
def checkpoint_filter_fn(state_dict, model: VisionTransformer):
    """timm / DeiT state dicts: resample `pos_embed` when the checkpoint's grid differs (a model
    built for another `img_size`), as timm does; every other key is left for the strict check."""
    out = dict(state_dict)
    pe, target = out.get("pos_embed"), model.pos_embed
    if isinstance(pe, torch.Tensor) and pe.dim() == 3 and pe.shape[-1] == target.shape[-1] and pe.shape != target.shape:
        n_old = pe.shape[1] - model.num_prefix_tokens
        side = math.isqrt(max(n_old, 0))
        if n_old > 0 and side * side == n_old:  # otherwise left as is: the strict check reports it
            out["pos_embed"] = resample_abs_pos_embed(pe, model.grid_size, (side, side), model.num_prefix_tokens)
    return out


# ---------------------------------------------------------------------------------------------------
# default configs (timm's; augreg weights are normalized with mean = std = 0.5)

register_pretrained_cfgs({
    f"vit_{size}_patch16_224": pretrained_cfg(224, mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD,
                                              tag="augreg2_in21k_ft_in1k" if size == "base" else "augreg_in21k_ft_in1k")
    for size in ("tiny", "small", "base", "large")
})


# ---------------------------------------------------------------------------------------------------
# entry points


def _create(model_args: dict, **kwargs) -> VisionTransformer:
    return VisionTransformer(**dict(model_args, **kwargs))


@register_model
def vit_tiny_patch16_224(**kwargs) -> VisionTransformer:
    return _create(dict(patch_size=16, embed_dim=192, depth=12, num_heads=3), **kwargs)


@register_model
def vit_small_patch16_224(**kwargs) -> VisionTransformer:
    return _create(dict(patch_size=16, embed_dim=384, depth=12, num_heads=6), **kwargs)


@register_model
def vit_base_patch16_224(**kwargs) -> VisionTransformer:
    return _create(dict(patch_size=16, embed_dim=768, depth=12, num_heads=12), **kwargs)


@register_model
def vit_large_patch16_224(**kwargs) -> VisionTransformer:
    return _create(dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16), **kwargs)
