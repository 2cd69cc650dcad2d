"""Swin Transformer (Liu et al., ICCV 2021), official parameter names, partition-free attention.

State-dict names follow microsoft/Swin-Transformer: `patch_embed.{proj,norm}`,
`layers.{i}.blocks.{j}.{norm1,attn.qkv,attn.proj,attn.relative_position_bias_table,norm2,mlp.fc1,mlp.fc2}`,
`layers.{i}.downsample.{norm,reduction}` at the END of stage i, `norm`, `head`. The checkpoint filter
also takes timm's layout (downsample at the START of stage i + 1, classifier `head.fc`).

Computation follows timm: the blocks run on `[B, H, W, C]` maps of any size; the image is padded to
the patch size, each attention pads to the window (roll, then pad) and patch merging pads odd maps.
Window shrinking (map not larger than the window => window = map, no shift) is decided per block at
construction from `img_size`, as in official/timm models built for a fixed `img_size`; inputs of other
sizes run with those windows and a shift mask derived from the actual padded map.

As a backbone (timm's interface): `forward_intermediates` returns each stage's map before its patch
merging (timm's stage outputs), `feature_info` describes them, and `create_model(..., features_only=True)`
wraps the model (`fastwin.models.features`); `group_matcher` reproduces timm's layer-decay groups on
this layout.

`fastwin.swap.swin` holds the rules that put fastwin's attention/blocks into official, timm and
detection-style Swin models.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict
from functools import partial
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .. import ops
from ..ops import inference
from ..layers import PatchEmbed
from ..layers.swin_block import PatchMerging, SwinTransformerBlock
from ..utils import init_weights_trunc_normal, pair
from .checkpoint import checkpoint_filter
from .features import check_image, check_output_fmt, feature_take_indices, to_format
from .pooling import MAP_POOLS, check_pool, pool_map, pooled_width
from .registry import pretrained_cfg, register_model, with_pretrained_cfg

__all__ = ["BasicLayer", "SwinTransformer", "swin_group_ordinal"]


# ----------------------------------------------------------------------------------------------- helpers

def stage_resolutions(img_size, patch_size, num_stages: int) -> List[Tuple[int, int]]:
    """Nominal feature-map size of every stage's blocks, used for window shrinking and bias-table shapes.

    The patch grid floors (`img // patch`, as timm's stem conv drops the remainder), and each patch
    merging halves it rounding up (`(r + 1) // 2`), because odd maps are zero-padded before merging:
    these are the maps the blocks really see, and what timm (>= 1.0.30) derives `input_resolution`
    from, so timm checkpoints of any `img_size` load and run identically. Where the official code runs
    (even maps at every stage) this equals its floors. At least 1.
    """
    h, w = pair("img_size", img_size)
    ph, pw = pair("patch_size", patch_size)
    res = [(max(1, h // ph), max(1, w // pw))]
    for _ in range(num_stages - 1):
        res.append(tuple((r + 1) // 2 for r in res[-1]))
    return res


_GROUP_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")
_GROUP_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")
MATCH_PREV_GROUP = 99999.0  # timm's marker: this ordinal joins the group before it


def swin_group_ordinal(name: str, coarse: bool = False) -> Tuple[float, ...]:
    """timm's Swin parameter-group ordinal for a parameter of the official layout.

    timm groups `^patch_embed` (stem), then per stage its patch merging with the first block
    (`layers.i.downsample` -> (i, 0)), every block on its own, and the final norm with the last
    block. Its merging of stage i is this layout's `layers.{i-1}.downsample`, hence the + 1.
    Returned as ordinals (not regexes) so `timm.optim` forms the groups it forms for timm's Swin.
    """
    if name.startswith("patch_embed."):
        return (0.0,)
    m = _GROUP_DOWNSAMPLE.match(name)
    if m:
        stage = float(int(m.group(1)) + 1)
        return (1.0, stage) if coarse else (1.0, stage, 0.0)
    m = _GROUP_BLOCK.match(name)
    if m:
        return (1.0, float(m.group(1))) if coarse else (1.0, float(m.group(1)), float(m.group(2)))
    if name.startswith("norm.") and not coarse:
        return (1.0, MATCH_PREV_GROUP)
    return (math.inf,)  # head (and norm when coarse), as timm's unmatched names


# ------------------------------------------------------------------------------------------------ stage

class BasicLayer(nn.Module):
    """One Swin stage: `depth` blocks alternating W-MSA / SW-MSA, then an optional PatchMerging.

    Args:
        dim: channels. input_resolution: (H, W) at construction (window shrinking). depth: blocks.
        num_heads, window_size, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop: block arguments.
        drop_path: one rate per block (list) or a single rate.
        norm_layer: norm class. downsample: PatchMerging class (or None) applied at the end.
        use_checkpoint: recompute blocks in backward (torch.utils.checkpoint, use_reentrant=False).
        pad_order: block pad/roll order.

    forward: [B, H, W, C] -> [B, H, W, C], or [B, ceil(H/2), ceil(W/2), 2C] with downsample.
    """

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio=4.0, qkv_bias=True,
                 qk_scale=None, drop=0.0, attn_drop=0.0, drop_path=0.0, norm_layer=nn.LayerNorm, downsample=None,
                 use_checkpoint=False, pad_order="roll_pad"):
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.depth = depth
        self.grad_checkpointing = use_checkpoint
        rates = list(drop_path) if isinstance(drop_path, (list, tuple)) else [drop_path] * depth
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(
                dim=dim, input_resolution=input_resolution, num_heads=num_heads, window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,  # odd blocks are shifted
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                drop_path=rates[i], norm_layer=norm_layer, pad_order=pad_order)
            for i in range(depth)
        ])
        self.downsample = downsample(input_resolution, dim=dim, norm_layer=norm_layer) if downsample else None

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's blocks without the downsample (the stage's feature map): [B, H, W, C] -> same."""
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(ops.bound(blk), x, use_reentrant=False)  # recompute on this backend
            else:
                x = blk(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_blocks(x)
        return x if self.downsample is None else self.downsample(x)

    def extra_repr(self):
        return f"dim={self.dim}, input_resolution={self.input_resolution}, depth={self.depth}"


# ------------------------------------------------------------------------------------------------ model

class SwinTransformer(nn.Module):
    """Swin Transformer for image classification.

    Args:
        img_size: int or (H, W); fixes each block's window shrinking (other sizes still run).
        patch_size: patch side. in_chans: image channels. num_classes: classes (0: no head).
        embed_dim: stage-1 channels (doubles per stage). depths, num_heads: per stage.
        window_size: window side. mlp_ratio, qkv_bias, qk_scale: block arguments.
        drop_rate: dropout after the patch embedding and projections. attn_drop_rate: attention dropout.
        drop_path_rate: stochastic depth, linearly increasing over all blocks from 0.
        norm_layer: norm class. patch_norm: LayerNorm after the patch embedding.
        global_pool: head pooling, timm's names (`pooling.MAP_POOLS`: "avg", "max", "avgmax",
            "catavgmax", or "" for none).
        use_checkpoint: gradient checkpointing (also `set_grad_checkpointing`).
        pad_order: "roll_pad" (timm; default) or "pad_roll" (detection code).

    forward: [B, in_chans, H, W] (any H, W) -> [B, num_classes].
    """

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dim=96,
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24), window_size=7,
                 mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1,
                 norm_layer=nn.LayerNorm, patch_norm=True, use_checkpoint=False, pad_order="roll_pad",
                 global_pool="avg"):
        super().__init__()
        self.global_pool = check_pool(global_pool, MAP_POOLS, type(self).__name__)
        if len(depths) != len(num_heads):
            raise ValueError(f"depths and num_heads need one entry per stage, got {list(depths)} and {list(num_heads)}")
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.img_size = pair("img_size", img_size)
        self.patch_size = patch_size
        self.window_size = window_size
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))
        self.head_hidden_size = pooled_width(self.num_features, global_pool)  # width of forward_head(pre_logits)
        self.output_fmt = "NHWC"  # layout of forward_features and of the default features_only maps
        stride = pair("patch_size", patch_size)[0]
        # `module`: the module whose output is the stage map (hooks, torch.fx feature extraction): the
        # stage's last block, since this layout's `layers.{i}` ends with the next stage's patch merging
        self.feature_info = [dict(num_chs=int(embed_dim * 2 ** i), reduction=stride * 2 ** i,
                                  module=f"layers.{i}.blocks.{depths[i] - 1}") for i in range(self.num_layers)]

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer if patch_norm else None,
                                      flatten=False, pad=True)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # stochastic depth decay rule
        resolutions = stage_resolutions(self.img_size, patch_size, self.num_layers)
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            self.layers.append(BasicLayer(
                dim=int(embed_dim * 2 ** i), input_resolution=resolutions[i], depth=depths[i],
                num_heads=num_heads[i], window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], norm_layer=norm_layer,
                downsample=PatchMerging if i < self.num_layers - 1 else None, use_checkpoint=use_checkpoint,
                pad_order=pad_order))
        self.norm = norm_layer(self.num_features)
        self.head = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights_trunc_normal)

    @torch.jit.ignore
    def no_weight_decay_keywords(self):
        return {"relative_position_bias_table"}

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Parameter names to keep out of weight decay (timm / `timm.optim` convention)."""
        return {n for n, _ in self.named_parameters() if "relative_position_bias_table" in n}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        """Layer-wise parameter groups for `timm.optim` (same groups as timm's Swin; see
        `swin_group_ordinal`)."""
        return partial(swin_group_ordinal, coarse=coarse)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for layer in self.layers:
            layer.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head with a fresh Linear(head_hidden_size, num_classes) (Identity for 0) and,
        unless None, the pooling (`""`: none, forward returns the [B, H', W', C] map)."""
        if global_pool is not None:
            self.global_pool = check_pool(global_pool, MAP_POOLS, type(self).__name__)
            self.head_hidden_size = pooled_width(self.num_features, global_pool)
        self.num_classes = num_classes
        ref = self.patch_embed.proj.weight  # the final norm may be pruned away
        self.head = (nn.Linear(self.head_hidden_size, num_classes, device=ref.device, dtype=ref.dtype)
                     if num_classes > 0 else nn.Identity())
        self.head.apply(init_weights_trunc_normal)

    def _check_input(self, x) -> None:
        check_image(x, self.patch_embed.proj.in_channels, self)

    @inference.in_arena
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, Sequence[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward that also returns stage feature maps (timm's backbone interface).

        Args:
            x: [B, in_chans, H, W], any size.
            indices: stages to return (None: all; int n: the last n; or a sequence, negative from the end).
            norm: apply the final norm to the last stage's map (only that one, as timm).
            stop_early: skip the stages after the last one requested (use with `intermediates_only`).
            output_fmt: "NCHW" (timm's default) or "NHWC".
            intermediates_only: return only the list of maps.
        Returns:
            maps: one per requested stage, each the stage's output before its patch merging,
            [B, C_i, H_i, W_i] (NCHW) or [B, H_i, W_i, C_i]; with `intermediates_only=False`,
            `(final normalized map [B, H', W', C], maps)`.
        """
        check_output_fmt(output_fmt)
        self._check_input(x)
        take, last = feature_take_indices(len(self.layers), indices)
        layers = self.layers[:last + 1] if stop_early else self.layers
        maps = []
        x = self.pos_drop(self.patch_embed(x))  # [B, H/p, W/p, C]
        for i, layer in enumerate(layers):
            x = layer.forward_blocks(x)
            if i in take:
                y = self.norm(x) if norm and i == len(self.feature_info) - 1 else x  # the final stage only
                maps.append(to_format(y, "NHWC", output_fmt))
            if layer.downsample is not None and i < len(layers) - 1:
                x = layer.downsample(x)
        if intermediates_only:
            return maps
        return self.norm(x), maps

    def prune_intermediate_layers(self, indices: Union[int, Sequence[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages (and the last kept stage's patch merging) that `indices` do not need.

        Returns:
            the absolute stage indices to take.
        """
        take, last = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[:last + 1]
        self.layers[-1].downsample = None
        if prune_head:
            self.reset_classifier(0)
        if prune_norm:
            self.norm = nn.Identity()
        return take

    @inference.in_arena
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_chans, H, W] -> normalized last-stage map [B, H', W', num_features]."""
        self._check_input(x)
        x = self.pos_drop(self.patch_embed(x))  # [B, H/p, W/p, C], image padded to the patch size
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """[B, H', W', C] -> pooled [B, head_hidden_size] (pre_logits) or logits [B, num_classes]."""
        x = pool_map(x, self.global_pool)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ------------------------------------------------------------------------------------- checkpoint filter

_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")


def _is_timm_layout(state_dict, num_layers: int) -> bool:
    """timm keeps patch merging at the start of stages 1..n-1; the official code at the end of 0..n-2."""
    stages = {int(m.group(1)) for m in map(_DOWNSAMPLE.match, state_dict) if m}
    return bool(stages) and 0 not in stages and (num_layers - 1) in stages


@checkpoint_filter(SwinTransformer)
def checkpoint_filter_fn(state_dict, model: SwinTransformer):
    """Convert timm's Swin layout to the official one; official and fastwin dicts pass unchanged.

    timm -> official: `layers.{i}.downsample.*` -> `layers.{i-1}.downsample.*`, `head.fc.*` -> `head.*`.
    """
    move = _is_timm_layout(state_dict, model.num_layers)
    out = OrderedDict()
    for k, v in state_dict.items():
        m = _DOWNSAMPLE.match(k)
        if move and m:
            k = f"layers.{int(m.group(1)) - 1}.downsample.{k[m.end():]}"
        elif k.startswith("head.fc."):
            k = "head." + k[len("head.fc."):]
        out[k] = v
    return out


# ---------------------------------------------------------------------------------------------- configs

def _cfg(input_size=224, crop_pct=0.9, tag="ms_in22k_ft_in1k"):
    # timm's defaults for these weights; the classifier is `head` here (timm's `head.fc`, see the filter)
    return pretrained_cfg(input_size, crop_pct, classifier="head", pool_size=(input_size // 32,) * 2, tag=tag)


default_cfgs = {
    "swin_tiny_patch4_window7_224": _cfg(tag="ms_in1k"),
    "swin_small_patch4_window7_224": _cfg(),
    "swin_base_patch4_window7_224": _cfg(),
    "swin_base_patch4_window12_384": _cfg(384, crop_pct=1.0),
    "swin_large_patch4_window7_224": _cfg(),
    "swin_large_patch4_window12_384": _cfg(384, crop_pct=1.0),
}


def _create_swin(variant: str, model_args: dict, kwargs: dict) -> SwinTransformer:
    model = SwinTransformer(**{**model_args, **kwargs})
    return with_pretrained_cfg(model, variant, default_cfgs[variant])


# ------------------------------------------------------------------------------------------ entry points

@register_model
def swin_tiny_patch4_window7_224(**kwargs) -> SwinTransformer:
    """Swin-T, 224x224, window 7 (28.3M parameters)."""
    args = dict(patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
    return _create_swin("swin_tiny_patch4_window7_224", args, kwargs)


@register_model
def swin_small_patch4_window7_224(**kwargs) -> SwinTransformer:
    """Swin-S, 224x224, window 7 (49.6M parameters)."""
    args = dict(patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
    return _create_swin("swin_small_patch4_window7_224", args, kwargs)


@register_model
def swin_base_patch4_window7_224(**kwargs) -> SwinTransformer:
    """Swin-B, 224x224, window 7 (87.8M parameters)."""
    args = dict(patch_size=4, window_size=7, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
    return _create_swin("swin_base_patch4_window7_224", args, kwargs)


@register_model
def swin_base_patch4_window12_384(**kwargs) -> SwinTransformer:
    """Swin-B, 384x384, window 12."""
    args = dict(img_size=384, patch_size=4, window_size=12, embed_dim=128, depths=(2, 2, 18, 2),
                num_heads=(4, 8, 16, 32))
    return _create_swin("swin_base_patch4_window12_384", args, kwargs)


@register_model
def swin_large_patch4_window7_224(**kwargs) -> SwinTransformer:
    """Swin-L, 224x224, window 7 (196.5M parameters)."""
    args = dict(patch_size=4, window_size=7, embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))
    return _create_swin("swin_large_patch4_window7_224", args, kwargs)


@register_model
def swin_large_patch4_window12_384(**kwargs) -> SwinTransformer:
    """Swin-L, 384x384, window 12."""
    args = dict(img_size=384, patch_size=4, window_size=12, embed_dim=192, depths=(2, 2, 18, 2),
                num_heads=(6, 12, 24, 48))
    return _create_swin("swin_large_patch4_window12_384", args, kwargs)
