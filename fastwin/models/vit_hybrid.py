"""Hybrid CNN + ViT: a ResNet-V2-style (non-pre-activation) CNN whose final feature map becomes the
ViT's token grid through a 1x1 (or p x p) patch projection. Structure and parameter names follow
timm's `vit_small_r26_s32_224` / `vit_tiny_r_s16_p8_224` (weight-standardized convs with TF "same"
padding, GroupNorm(32), bottleneck blocks), so their state dicts have the same keys and shapes.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence, Tuple

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from ..utils import fx_proxy

from .registry import (
    IMAGENET_INCEPTION_MEAN,
    IMAGENET_INCEPTION_STD,
    pretrained_cfg,
    register_model,
    register_pretrained_cfgs,
)
from .vit import VisionTransformer

__all__ = ["StdConv2dSame", "GroupNormAct", "Bottleneck", "ResNetV2Backbone", "HybridEmbed"]


def _same_pad(size: int, k: int, s: int) -> int:
    """Total TF-'same' padding of one dimension: output ceil(size / s)."""
    return max((math.ceil(size / s) - 1) * s + k - size, 0)


def pad_same(x: torch.Tensor, k: int, s: int, value: float = 0.0) -> torch.Tensor:
    """Pad [B, C, H, W] so a k x k / stride s window gives ceil(H / s) x ceil(W / s); the odd pixel
    goes bottom/right, as TensorFlow does."""
    ph, pw = _same_pad(x.shape[-2], k, s), _same_pad(x.shape[-1], k, s)
    if ph or pw:
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=value)
    return x


torch.fx.wrap("pad_same")  # size-dependent padding: one node in a traced graph, right for every size


class StdConv2dSame(nn.Conv2d):
    """Conv2d with weight standardization (per output channel, biased variance, `eps`) and TF
    'same' padding; stride-1 convs pad symmetrically (identical, and static)."""

    def __init__(self, in_chs, out_chs, kernel_size, stride=1, bias=False, eps=1e-8):
        static = stride == 1
        super().__init__(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2 if static else 0,
                         bias=bias)
        self.same_pad = not static
        self.eps = eps

    def forward(self, x):
        if self.same_pad:
            x = pad_same(x, self.kernel_size[0], self.stride[0])
        w = self.weight.flatten(1)
        var, mean = torch.var_mean(w, dim=1, unbiased=False, keepdim=True)
        w = ((w - mean) * torch.rsqrt(var + self.eps)).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class GroupNormAct(nn.GroupNorm):
    """GroupNorm(32 groups, eps 1e-5) followed by ReLU unless `apply_act=False` (timm names)."""

    def __init__(self, num_channels, num_groups=32, eps=1e-5, apply_act=True):
        super().__init__(num_groups, num_channels, eps=eps)
        self.act = nn.ReLU(inplace=True) if apply_act else nn.Identity()

    def forward(self, x):
        return self.act(super().forward(x))


class MaxPool2dSame(nn.Module):
    """3x3 / stride-2 max pool with TF 'same' padding by -inf (padding never wins the max)."""

    def __init__(self, kernel_size=3, stride=2):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        x = pad_same(x, self.kernel_size, self.stride, value=-float("inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


class DownsampleConv(nn.Module):
    """Projection shortcut: 1x1 (strided) conv + GroupNorm without activation."""

    def __init__(self, in_chs, out_chs, stride):
        super().__init__()
        self.conv = StdConv2dSame(in_chs, out_chs, 1, stride=stride)
        self.norm = GroupNormAct(out_chs, apply_act=False)

    def forward(self, x):
        return self.norm(self.conv(x))


class Bottleneck(nn.Module):
    """Non-pre-activation bottleneck (ResNet v1.5 layout): 1x1 -> 3x3 (stride) -> 1x1, each
    followed by GroupNorm, ReLU after the residual sum.

    forward: [B, in_chs, H, W] -> [B, out_chs, ceil(H / stride), ceil(W / stride)]
    """

    def __init__(self, in_chs, out_chs, stride=1, bottle_ratio=0.25, downsample=False):
        super().__init__()
        mid = int(out_chs * bottle_ratio)
        self.downsample = DownsampleConv(in_chs, out_chs, stride) if downsample else None
        self.conv1 = StdConv2dSame(in_chs, mid, 1)
        self.norm1 = GroupNormAct(mid)
        self.conv2 = StdConv2dSame(mid, mid, 3, stride=stride)
        self.norm2 = GroupNormAct(mid)
        self.conv3 = StdConv2dSame(mid, out_chs, 1)
        self.norm3 = GroupNormAct(out_chs, apply_act=False)
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.norm1(self.conv1(x))
        x = self.norm2(self.conv2(x))
        x = self.norm3(self.conv3(x))
        return self.act3(x + shortcut)


class ResNetStage(nn.Module):
    def __init__(self, in_chs, out_chs, stride, depth):
        super().__init__()
        self.blocks = nn.Sequential(*[
            Bottleneck(in_chs if i == 0 else out_chs, out_chs, stride if i == 0 else 1, downsample=i == 0)
            for i in range(depth)
        ])

    def forward(self, x):
        return self.blocks(x)


def _stem(in_chans: int, out_chs: int = 64) -> nn.Sequential:
    """7x7/2 conv, GroupNorm + ReLU, 3x3/2 max pool: stride 4."""
    return nn.Sequential(OrderedDict([
        ("conv", StdConv2dSame(in_chans, out_chs, 7, stride=2)),
        ("norm", GroupNormAct(out_chs)),
        ("pool", MaxPool2dSame(3, 2)),
    ]))


class ResNetV2Backbone(nn.Module):
    """Stem + bottleneck stages (first stage stride 1, the rest stride 2), no final norm.

    forward: [B, C_in, H, W] -> [B, channels[-1], ceil(H / 4 / 2^(stages-1)), ...]
    """

    def __init__(self, layers: Sequence[int], in_chans=3, channels=(256, 512, 1024, 2048), stem_chs=64):
        super().__init__()
        self.stem = _stem(in_chans, stem_chs)
        stages, prev = [], stem_chs
        for i, (d, c) in enumerate(zip(layers, channels)):
            stages.append(ResNetStage(prev, c, 1 if i == 0 else 2, d))
            prev = c
        self.stages = nn.Sequential(*stages)
        self.num_features = prev
        self.num_stride2_stages = max(len(layers) - 1, 0)

    def forward(self, x):
        return self.stages(self.stem(x))


class HybridEmbed(nn.Module):
    """CNN feature map -> Conv(k = s = patch) projection -> token grid [B, h, w, D].

    Args:
        backbone: `ResNetV2Backbone`, or a bare stem `nn.Sequential` (stride 4, 64 channels).
        patch_size: projection kernel/stride on the feature map (1 for r26_s32, 8 for r_s16_p8).
    """

    def __init__(self, backbone: nn.Module, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.backbone = backbone
        self.in_chans = in_chans
        self.patch_size = patch_size
        feature_dim = getattr(backbone, "num_features", 64)
        self.proj = nn.Conv2d(feature_dim, embed_dim, kernel_size=patch_size, stride=patch_size)

    def feature_size(self, size: int) -> int:
        size = math.ceil(math.ceil(size / 2) / 2)  # stem conv and pool ('same': ceil)
        for _ in range(getattr(self.backbone, "num_stride2_stages", 0)):
            size = math.ceil(size / 2)
        return size

    def grid_size(self, img_size: Tuple[int, int]) -> Tuple[int, int]:
        return tuple(self.feature_size(s) // self.patch_size for s in img_size)

    def forward(self, x):
        x = self.proj(self.backbone(x))  # [B, D, h, w]
        if not fx_proxy(x) and (x.shape[-2] == 0 or x.shape[-1] == 0):
            raise ValueError(f"input too small: the feature map is smaller than the {self.patch_size}px patch")
        return x.permute(0, 2, 3, 1)


def _hybrid(layers: Sequence[int], patch_size: int, model_args: dict, channels=(256, 512, 1024, 2048),
            **kwargs) -> VisionTransformer:
    in_chans = kwargs.get("in_chans", 3)
    backbone = ResNetV2Backbone(layers, in_chans=in_chans, channels=channels) if layers else _stem(in_chans)

    def embed_layer(img_size, _patch, chans, embed_dim):
        return HybridEmbed(backbone, patch_size, embed_dim, chans)

    return VisionTransformer(**dict(dict(model_args, embed_layer=embed_layer), **kwargs))


register_pretrained_cfgs({
    "vit_small_r26_s32_224": pretrained_cfg(224, mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD,
                                            first_conv="patch_embed.backbone.stem.conv", tag="augreg_in21k_ft_in1k"),
    "vit_tiny_r_s16_p8_224": pretrained_cfg(224, mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD,
                                            first_conv="patch_embed.backbone.conv", tag="augreg_in21k_ft_in1k"),
})


@register_model
def vit_small_r26_s32_224(**kwargs) -> VisionTransformer:
    """R26 (2-2-2-2 bottleneck stages, stride 32) + ViT-S (384 dim, 12 blocks, 6 heads), 1x1 patches.

    `layers` / `channels` override the backbone (tests build tiny ones); the rest go to the ViT."""
    layers = kwargs.pop("layers", (2, 2, 2, 2))
    return _hybrid(layers, 1, dict(embed_dim=384, depth=12, num_heads=6), **kwargs)


@register_model
def vit_tiny_r_s16_p8_224(**kwargs) -> VisionTransformer:
    """ResNet stem only (stride 4) + ViT-Ti (192 dim, 12 blocks, 3 heads) on 8x8 feature patches."""
    return _hybrid((), 8, dict(embed_dim=192, depth=12, num_heads=3), **kwargs)
