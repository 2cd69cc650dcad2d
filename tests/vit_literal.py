"""Literal, plain-PyTorch ViT / DeiT / hybrid R26+ViT written from the papers' and timm's documented
semantics; the independent specification for fastwin's ViT-family tests.

Naive on purpose: explicit attention matrix, patchify with a strided conv, position-embedding
resampling done inline in `forward`. Names are timm's (`Attention`, `Block`, `patch_embed.proj`,
`cls_token`, `dist_token`, `head_dist`, `patch_embed.backbone.stem.conv` ...), so state dicts move
between these and fastwin's models, and fastwin's swap rules see timm-shaped modules.
"""
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.attn_drop = nn.Dropout(0.0)
        self.norm = nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x, attn_mask=None, is_causal=False):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-1, -2)  # B, heads, N, N
        attn = attn.softmax(dim=-1)
        out = (attn @ v).permute(0, 2, 1, 3).reshape(B, N, C)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class ConvPatchEmbed(nn.Module):
    def __init__(self, patch, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x)  # B, D, h, w


class VisionTransformer(nn.Module):
    """timm-style ViT. `distilled` adds the DeiT distillation token and head."""

    def __init__(self, img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, num_classes=1000,
                 global_pool="token", distilled=False, patch_embed=None, grid=None, in_chans=3):
        super().__init__()
        self.patch_embed = patch_embed or ConvPatchEmbed(patch_size, in_chans, embed_dim)
        self.grid = grid or (img_size // patch_size, img_size // patch_size)
        self.global_pool = global_pool
        self.distilled = distilled
        self.n_prefix = 2 if distilled else 1
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        if distilled:
            self.dist_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid[0] * self.grid[1] + self.n_prefix, embed_dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads) for _ in range(depth)])
        if global_pool == "avg":
            self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        else:
            self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        if distilled:
            self.head_dist = nn.Linear(embed_dim, num_classes)

    def position_embedding(self, h, w):
        pe = self.pos_embed
        if (h, w) == tuple(self.grid):
            return pe
        prefix, grid = pe[:, :self.n_prefix], pe[:, self.n_prefix:]
        D = pe.shape[-1]
        grid = grid.reshape(1, self.grid[0], self.grid[1], D).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, D)
        return torch.cat([prefix, grid], dim=1)

    def forward(self, x):
        x = self.patch_embed(x)
        B, D, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        prefix = [self.cls_token.expand(B, 1, D)]
        if self.distilled:
            prefix.append(self.dist_token.expand(B, 1, D))
        x = torch.cat(prefix + [tokens], dim=1) + self.position_embedding(h, w)
        x = self.blocks(x)
        if self.global_pool == "avg":
            return self.head(self.fc_norm(x[:, self.n_prefix:].mean(1)))
        x = self.norm(x)
        if not self.distilled:
            return self.head(x[:, 0])
        a, b = self.head(x[:, 0]), self.head_dist(x[:, 1])
        return (a, b) if self.training else (a + b) / 2


# -- hybrid backbone: weight-standardized convs with TF 'same' padding, GroupNorm, bottlenecks --------


def tf_same_pad(x, k, s, value=0.0):
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class StdConv(nn.Conv2d):
    def __init__(self, cin, cout, k, stride=1):
        super().__init__(cin, cout, k, stride=stride, bias=False)

    def forward(self, x):
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = ((w - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True)
        w = (w - mean) / torch.sqrt(var + 1e-8)
        x = tf_same_pad(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, w, None, self.stride)


class Downsample(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = StdConv(cin, cout, 1, stride)
        self.norm = nn.GroupNorm(32, cout, eps=1e-5)

    def forward(self, x):
        return self.norm(self.conv(x))


class Bottleneck(nn.Module):
    def __init__(self, cin, cout, stride, first):
        super().__init__()
        mid = cout // 4
        if first:
            self.downsample = Downsample(cin, cout, stride)
        self.first = first
        self.conv1, self.norm1 = StdConv(cin, mid, 1), nn.GroupNorm(32, mid)
        self.conv2, self.norm2 = StdConv(mid, mid, 3, stride), nn.GroupNorm(32, mid)
        self.conv3, self.norm3 = StdConv(mid, cout, 1), nn.GroupNorm(32, cout)

    def forward(self, x):
        sc = self.downsample(x) if self.first else x
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return F.relu(y + sc)


class Stage(nn.Module):
    def __init__(self, cin, cout, stride, depth):
        super().__init__()
        self.blocks = nn.Sequential(*[Bottleneck(cin if i == 0 else cout, cout, stride if i == 0 else 1, i == 0)
                                      for i in range(depth)])

    def forward(self, x):
        return self.blocks(x)


class Stem(nn.Sequential):
    def __init__(self, in_chans):
        super().__init__(OrderedDict([("conv", StdConv(in_chans, 64, 7, 2)), ("norm", nn.GroupNorm(32, 64))]))

    def forward(self, x):
        x = F.relu(self.norm(self.conv(x)))
        return F.max_pool2d(tf_same_pad(x, 3, 2, value=-math.inf), 3, 2)


class Backbone(nn.Module):
    def __init__(self, layers, channels, in_chans=3):
        super().__init__()
        self.stem = Stem(in_chans)
        stages, prev = [], 64
        for i, (d, c) in enumerate(zip(layers, channels)):
            stages.append(Stage(prev, c, 1 if i == 0 else 2, d))
            prev = c
        self.stages = nn.Sequential(*stages)

    def forward(self, x):
        return self.stages(self.stem(x))


class HybridEmbed(nn.Module):
    def __init__(self, backbone, feat_dim, patch, dim):
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Conv2d(feat_dim, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(self.backbone(x))


def hybrid_vit(img_size, layers, channels, embed_dim, depth, num_heads, num_classes):
    """R-ViT with a 1x1 projection; grid = img_size / 4 / 2^(stages-1) (ceil at each stride-2 step)."""
    side = -(-img_size // 4)
    for _ in range(len(layers) - 1):
        side = -(-side // 2)
    embed = HybridEmbed(Backbone(layers, channels), channels[len(layers) - 1], 1, embed_dim)
    return VisionTransformer(embed_dim=embed_dim, depth=depth, num_heads=num_heads, num_classes=num_classes,
                             patch_embed=embed, grid=(side, side))
