"""Swin Transformer V2 (Liu et al., CVPR 2022) with timm's parameter names, partition-free attention.

State-dict names follow timm's `swin_transformer_v2` (timm checkpoints load as they are):
`patch_embed.{proj,norm}`, `layers.{i}.downsample.{reduction,norm}` at the START of stages 1..n-1,
`layers.{i}.blocks.{j}.{attn.{logit_scale,cpb_mlp.0,cpb_mlp.2,qkv,q_bias,v_bias,proj},norm1,mlp.fc1,
mlp.fc2,norm2}`, `norm`, `head.fc`. The checkpoint filter also takes microsoft/Swin-Transformer's V2
layout (patch merging at the END of stages 0..n-2, classifier `head`).

Computation follows timm: residual post-norm blocks on `[B, H, W, C]` maps, cosine attention with a
per-head logit scale, the continuous position bias evaluated once per block call, roll-then-pad for
maps not divisible by the window, a shift mask derived from the actual padded map (timm's
`dynamic_mask`), so any input size runs. The window shrinks (shift 0) where a stage's nominal map,
as timm computes it (`stage_resolutions`: the patch grid, halved rounding up per merge), is not larger
than the window.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .. import ops
from ..ops import inference
from ..layers import PatchEmbed
from ..layers.swin_v2_block import PatchMergingV2, SwinTransformerV2Block
from ..utils import init_weights_trunc_normal, pair
from .checkpoint import checkpoint_filter
from .features import check_image, check_output_fmt, feature_take_indices, to_format
from .pooling import MAP_POOLS, check_pool, pool_map, pooled_width
from .registry import pretrained_cfg, register_model, register_pretrained_cfgs
from .swin import stage_resolutions

__all__ = ["SwinTransformerV2", "SwinTransformerV2Stage"]


# ----------------------------------------------------------------------------------------------- helpers

class ClassifierHead(nn.Module):
    """Global pool over [B, H, W, C] (timm's names, `pooling.MAP_POOLS`), dropout, Linear `fc`
    (timm's `head.fc` name). `num_features`: the pooled width."""

    def __init__(self, in_features: int, num_classes: int, global_pool: str = "avg", drop_rate: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.global_pool = check_pool(global_pool, MAP_POOLS, "SwinTransformerV2")
        self.num_features = pooled_width(in_features, global_pool)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, global_pool: Optional[str] = None, like: Optional[torch.Tensor] = None) -> None:
        """New `fc` (on the device / dtype of `like`), and the pooling unless None."""
        if global_pool is not None:
            self.global_pool = check_pool(global_pool, MAP_POOLS, "SwinTransformerV2")
            self.num_features = pooled_width(self.in_features, global_pool)
        kw = {} if like is None else dict(device=like.device, dtype=like.dtype)
        self.fc = nn.Linear(self.num_features, num_classes, **kw) if num_classes > 0 else nn.Identity()
        self.fc.apply(init_weights_trunc_normal)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(pool_map(x, self.global_pool))
        return x if pre_logits else self.fc(x)


# ------------------------------------------------------------------------------------------------ stage

class SwinTransformerV2Stage(nn.Module):
    """One Swin V2 stage: optional PatchMergingV2 at the start, then `depth` blocks (W-MSA / SW-MSA).

    Args:
        dim: input channels. out_dim: channels after the patch merging (= dim without it).
        input_resolution: (H, W) of the blocks' map at construction (window shrinking).
        depth, num_heads, window_size: as usual. downsample: merge patches first.
        always_partition, mlp_ratio, qkv_bias, proj_drop, attn_drop, act_layer, norm_layer,
        pretrained_window_size, pad_order: block arguments. drop_path: one rate per block or one rate.

    forward: [B, H, W, dim] -> [B, ceil(H/2), ceil(W/2), out_dim] with downsample, else same shape.
    """

    def __init__(self, dim, out_dim, input_resolution, depth, num_heads, window_size, always_partition=False,
                 downsample=False, mlp_ratio=4.0, qkv_bias=True, proj_drop=0.0, attn_drop=0.0, drop_path=0.0,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm, pretrained_window_size=0, pad_order="roll_pad"):
        super().__init__()
        if not downsample and dim != out_dim:
            raise ValueError(f"a stage without downsample keeps its channels, got dim {dim} and out_dim {out_dim}")
        self.dim = dim
        self.input_resolution = pair("input_resolution", input_resolution)
        self.depth = depth
        self.grad_checkpointing = False
        window = pair("window_size", window_size)
        shift = (window[0] // 2, window[1] // 2)
        rates = list(drop_path) if isinstance(drop_path, (list, tuple)) else [drop_path] * depth
        self.downsample = PatchMergingV2(dim, out_dim, norm_layer) if downsample else nn.Identity()
        self.blocks = nn.ModuleList([
            SwinTransformerV2Block(
                out_dim, self.input_resolution, num_heads, window, 0 if i % 2 == 0 else shift,  # odd blocks shift
                always_partition=always_partition, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop,
                attn_drop=attn_drop, drop_path=rates[i], act_layer=act_layer, norm_layer=norm_layer,
                pretrained_window_size=pretrained_window_size, pad_order=pad_order)
            for i in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(ops.bound(blk), x, use_reentrant=False)  # recompute on this backend
            else:
                x = blk(x)
        return x

    def extra_repr(self):
        return f"dim={self.dim}, input_resolution={self.input_resolution}, depth={self.depth}"


# ------------------------------------------------------------------------------------------------ model

class SwinTransformerV2(nn.Module):
    """Swin Transformer V2 for image classification (timm's constructor and names).

    Args:
        img_size: int or (H, W); fixes each block's window shrinking (other sizes still run).
        patch_size: patch side. in_chans: image channels. num_classes: classes (0: no head).
        global_pool: head pooling, timm's names (`pooling.MAP_POOLS`; "" for none).
        embed_dim: stage-1 channels (doubles per stage), or one value per stage.
        depths, num_heads: per stage. window_size: window side (or pair).
        always_partition: never shrink windows to small maps.
        mlp_ratio, qkv_bias: block arguments.
        drop_rate: head dropout. proj_drop_rate, attn_drop_rate: projection / attention dropout.
        drop_path_rate: stochastic depth, linearly increasing over all blocks from 0.
        act_layer, norm_layer: MLP activation and norm classes.
        pretrained_window_sizes: per stage (or one int), the window the position-bias MLP was trained
            with (0: this model's window).
        pad_order: "roll_pad" (timm) or "pad_roll" (detection code) on maps not divisible by the window.

    forward: [B, in_chans, H, W] (any H, W) -> [B, num_classes].
    """

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, global_pool="avg", embed_dim=96,
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24), window_size=7,
                 always_partition=False, mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0, proj_drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.1, act_layer=nn.GELU, norm_layer=nn.LayerNorm,
                 pretrained_window_sizes: Sequence[int] = (0, 0, 0, 0), pad_order="roll_pad"):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths and num_heads need one entry per stage, got {list(depths)} and {list(num_heads)}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_layers = len(depths)
        dims = list(embed_dim) if isinstance(embed_dim, (list, tuple)) else [int(embed_dim * 2 ** i)
                                                                             for i in range(self.num_layers)]
        if len(dims) != self.num_layers:
            raise ValueError(f"embed_dim needs one entry per stage ({self.num_layers}), got {list(embed_dim)}")
        pws = [pretrained_window_sizes] * self.num_layers if isinstance(pretrained_window_sizes, int) else \
            list(pretrained_window_sizes)
        if len(pws) != self.num_layers and not any(pws):  # the all-zero default fits any number of stages
            pws = [0] * self.num_layers
        if len(pws) != self.num_layers:
            raise ValueError(f"pretrained_window_sizes needs one entry per stage ({self.num_layers}), got {pws}")
        self.embed_dim = dims[0]
        self.img_size = pair("img_size", img_size)
        self.patch_size = pair("patch_size", patch_size)
        self.window_size = window_size
        self.num_features = dims[-1]
        self.output_fmt = "NHWC"  # layout of forward_features and of the default features_only maps

        self.patch_embed = PatchEmbed(self.patch_size, in_chans, dims[0], norm_layer, flatten=False, pad=True)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # stochastic depth decay rule
        resolutions = stage_resolutions(self.img_size, self.patch_size, self.num_layers)
        self.layers = nn.ModuleList()
        self.feature_info = []
        for i in range(self.num_layers):
            self.layers.append(SwinTransformerV2Stage(
                dim=dims[max(i - 1, 0)], out_dim=dims[i], input_resolution=resolutions[i], depth=depths[i],
                num_heads=num_heads[i], window_size=window_size, always_partition=always_partition,
                downsample=i > 0, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate, drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], act_layer=act_layer,
                norm_layer=norm_layer, pretrained_window_size=pws[i], pad_order=pad_order))
            self.feature_info.append(dict(num_chs=dims[i], reduction=self.patch_size[0] * 2 ** i, module=f"layers.{i}"))
        self.norm = norm_layer(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, global_pool, drop_rate)
        self.head_hidden_size = self.head.num_features  # width of forward_head(pre_logits=True)
        self.apply(init_weights_trunc_normal)
        for layer in self.layers:  # residual post-norms start at zero: every block starts as the identity
            for blk in layer.blocks:
                for norm in (blk.norm1, blk.norm2):
                    nn.init.zeros_(norm.weight)
                    nn.init.zeros_(norm.bias)

    # -- timm-style surface --------------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Parameter names to keep out of weight decay: the position-bias MLPs and logit scales.

        (timm lists the module names here, which its optimizer helpers never match; these are the
        parameters the official training excludes.)
        """
        return {n for n, _ in self.named_parameters() if "cpb_mlp" in n or "logit_scale" in n}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer-wise parameter groups for `timm.optim` (timm's Swin V2 matcher; same layout)."""
        return dict(
            stem=r"^absolute_pos_embed|patch_embed",
            blocks=r"^layers\.(\d+)" if coarse else [
                (r"^layers\.(\d+).downsample", (0,)),
                (r"^layers\.(\d+)\.\w+\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for layer in self.layers:
            layer.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier with a fresh Linear(head_hidden_size, num_classes) (Identity for 0) and,
        unless None, the pooling (`""`: none, forward returns the [B, H', W', C] map)."""
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, like=self.patch_embed.proj.weight)
        self.head_hidden_size = self.head.num_features

    def _check_input(self, x) -> None:
        check_image(x, self.in_chans, self)

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
            stop_early: skip the stages after the last one requested.
            output_fmt: "NCHW" (timm's default) or "NHWC".
            intermediates_only: return only the list of maps.
        Returns:
            maps [B, C_i, H_i, W_i] (NCHW) or [B, H_i, W_i, C_i], one per requested stage; with
            `intermediates_only=False`, `(final normalized map [B, H', W', C], maps)`.
        """
        check_output_fmt(output_fmt)
        self._check_input(x)
        take, last = feature_take_indices(len(self.layers), indices)
        layers = self.layers[:last + 1] if stop_early else self.layers
        maps = []
        x = self.patch_embed(x)  # [B, H/p, W/p, C]
        for i, layer in enumerate(layers):
            x = layer(x)
            if i in take:
                y = self.norm(x) if norm and i == len(self.feature_info) - 1 else x  # the final stage only
                maps.append(to_format(y, "NHWC", output_fmt))
        if intermediates_only:
            return maps
        return self.norm(x), maps

    def prune_intermediate_layers(self, indices: Union[int, Sequence[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages `indices` do not need (and the norm / head on request); returns the indices."""
        take, last = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[:last + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take

    @inference.in_arena
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_chans, H, W] -> normalized last-stage map [B, H', W', num_features]."""
        self._check_input(x)
        x = self.patch_embed(x)  # [B, H/p, W/p, C], image padded to the patch size
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """[B, H', W', C] -> pooled [B, C] (pre_logits) or logits [B, num_classes]."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ------------------------------------------------------------------------------------- checkpoint filter

_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")


@checkpoint_filter(SwinTransformerV2)
def checkpoint_filter_fn(state_dict, model: SwinTransformerV2):
    """microsoft/Swin-Transformer V2 layout -> timm's; timm and fastwin dicts pass unchanged.

    The official code merges patches at the end of stages 0..n-2 (`layers.{i}.downsample` ->
    `layers.{i+1}.downsample`) and names the classifier `head` (-> `head.fc`). Idempotent.
    """
    stages = {int(m.group(1)) for m in map(_DOWNSAMPLE.match, state_dict) if m}
    official = 0 in stages
    out = OrderedDict()
    for k, v in state_dict.items():
        m = _DOWNSAMPLE.match(k)
        if official and m:
            k = f"layers.{int(m.group(1)) + 1}.downsample.{k[m.end():]}"
        elif k.startswith("head.") and not k.startswith("head.fc."):
            k = "head.fc." + k[len("head."):]
        out[k] = v
    return out


# ---------------------------------------------------------------------------------------------- configs

def _cfg(input_size=256, crop_pct=0.9, tag="ms_in1k", num_classes=1000):
    return pretrained_cfg(input_size, crop_pct, classifier="head.fc", pool_size=(input_size // 32,) * 2, tag=tag,
                          num_classes=num_classes)


register_pretrained_cfgs({
    **{f"swinv2_{s}_window{w}_256": _cfg() for s in ("tiny", "small", "base") for w in (8, 16)},
    "swinv2_base_window12_192": _cfg(192, tag="ms_in22k", num_classes=21841),
    "swinv2_large_window12_192": _cfg(192, tag="ms_in22k", num_classes=21841),
    "swinv2_base_window12to16_192to256": _cfg(tag="ms_in22k_ft_in1k"),
    "swinv2_large_window12to16_192to256": _cfg(tag="ms_in22k_ft_in1k"),
    "swinv2_base_window12to24_192to384": _cfg(384, crop_pct=1.0, tag="ms_in22k_ft_in1k"),
    "swinv2_large_window12to24_192to384": _cfg(384, crop_pct=1.0, tag="ms_in22k_ft_in1k"),
})

_TINY = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SMALL = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_BASE = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_LARGE = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))
_FROM_192 = (12, 12, 12, 6)  # windows of the 192px pretraining, per stage


def _create(model_args: dict, kwargs: dict) -> SwinTransformerV2:
    return SwinTransformerV2(**{**model_args, **kwargs})


# ------------------------------------------------------------------------------------------ entry points

@register_model
def swinv2_tiny_window8_256(**kwargs) -> SwinTransformerV2:
    """Swin-T V2, 256x256, window 8."""
    return _create(dict(img_size=256, window_size=8, **_TINY), kwargs)


@register_model
def swinv2_tiny_window16_256(**kwargs) -> SwinTransformerV2:
    """Swin-T V2, 256x256, window 16."""
    return _create(dict(img_size=256, window_size=16, **_TINY), kwargs)


@register_model
def swinv2_small_window8_256(**kwargs) -> SwinTransformerV2:
    """Swin-S V2, 256x256, window 8."""
    return _create(dict(img_size=256, window_size=8, **_SMALL), kwargs)


@register_model
def swinv2_small_window16_256(**kwargs) -> SwinTransformerV2:
    """Swin-S V2, 256x256, window 16."""
    return _create(dict(img_size=256, window_size=16, **_SMALL), kwargs)


@register_model
def swinv2_base_window8_256(**kwargs) -> SwinTransformerV2:
    """Swin-B V2, 256x256, window 8."""
    return _create(dict(img_size=256, window_size=8, **_BASE), kwargs)


@register_model
def swinv2_base_window16_256(**kwargs) -> SwinTransformerV2:
    """Swin-B V2, 256x256, window 16."""
    return _create(dict(img_size=256, window_size=16, **_BASE), kwargs)


@register_model
def swinv2_base_window12_192(**kwargs) -> SwinTransformerV2:
    """Swin-B V2, 192x192, window 12 (ImageNet-22k pretraining)."""
    return _create(dict(img_size=192, window_size=12, num_classes=21841, **_BASE), kwargs)


@register_model
def swinv2_base_window12to16_192to256(**kwargs) -> SwinTransformerV2:
    """Swin-B V2, pretrained at 192x192 / window 12, fine-tuned at 256x256 / window 16."""
    return _create(dict(img_size=256, window_size=16, pretrained_window_sizes=_FROM_192, **_BASE), kwargs)


@register_model
def swinv2_base_window12to24_192to384(**kwargs) -> SwinTransformerV2:
    """Swin-B V2, pretrained at 192x192 / window 12, fine-tuned at 384x384 / window 24."""
    return _create(dict(img_size=384, window_size=24, pretrained_window_sizes=_FROM_192, **_BASE), kwargs)


@register_model
def swinv2_large_window12_192(**kwargs) -> SwinTransformerV2:
    """Swin-L V2, 192x192, window 12 (ImageNet-22k pretraining)."""
    return _create(dict(img_size=192, window_size=12, num_classes=21841, **_LARGE), kwargs)


@register_model
def swinv2_large_window12to16_192to256(**kwargs) -> SwinTransformerV2:
    """Swin-L V2, pretrained at 192x192 / window 12, fine-tuned at 256x256 / window 16."""
    return _create(dict(img_size=256, window_size=16, pretrained_window_sizes=_FROM_192, **_LARGE), kwargs)


@register_model
def swinv2_large_window12to24_192to384(**kwargs) -> SwinTransformerV2:
    """Swin-L V2, pretrained at 192x192 / window 12, fine-tuned at 384x384 / window 24."""
    return _create(dict(img_size=384, window_size=24, pretrained_window_sizes=_FROM_192, **_LARGE), kwargs)
