"""Literal Swin implementations for the tests, written plainly from the published semantics.

Nothing here imports fastwin: these modules are the independent oracle. They use the explicit
roll / pad / window_partition / attention matrix / window_reverse steps and the shift mask built from
three slices per axis with -100.0, in three flavours:

* `OfficialSwin` — microsoft/Swin-Transformer classification: `[B, L, C]` blocks, no padding,
  window shrinks to min(resolution) (shift 0), persistent `attn_mask` / `relative_position_index`
  buffers, downsample at the END of each stage, classifier `head`.
* `TimmSwin` — timm: `[B, H, W, C]` blocks, roll then pad, per-dimension window shrink, downsample at
  the START of the next stage, classifier `head.fc`.
* `DetectionLayer` / `DetectionBlock` — detection/segmentation code: `[B, L, C]` with `blk.H, blk.W`
  set by the layer, pad then roll, mask built over the padded map and passed as `mask_matrix`.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def to_pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def window_partition(x, wh, ww):
    """[B, H, W, C] -> [B * nW, wh, ww, C]."""
    B, H, W, C = x.shape
    x = x.view(B, H // wh, wh, W // ww, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, wh, ww, C)


def window_reverse(windows, wh, ww, H, W):
    """[B * nW, wh, ww, C] -> [B, H, W, C]."""
    B = int(windows.shape[0] / (H * W / wh / ww))
    x = windows.view(B, H // wh, W // ww, wh, ww, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


def build_attn_mask(H, W, wh, ww, sh, sw):
    """Shift mask over an H x W map (already padded): [nW, N, N] of 0 / -100.0."""
    img_mask = torch.zeros((1, H, W, 1))
    h_slices = (slice(0, -wh), slice(-wh, -sh), slice(-sh, None))
    w_slices = (slice(0, -ww), slice(-ww, -sw), slice(-sw, None))
    cnt = 0
    for h in h_slices:
        for w in w_slices:
            img_mask[:, h, w, :] = cnt
            cnt += 1
    mask_windows = window_partition(img_mask, wh, ww).view(-1, wh * ww)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))


class LiteralMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class LiteralWindowAttention(nn.Module):
    """Explicit attention matrix with relative position bias; `persistent_index` as in official code."""

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, persistent_index=True):
        super().__init__()
        self.dim = dim
        self.window_size = to_pair(window_size)
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * wh - 1) * (2 * ww - 1), num_heads) * 0.5)
        coords_h, coords_w = torch.arange(wh), torch.arange(ww)
        coords = torch.stack(torch.meshgrid([coords_h, coords_w], indexing="ij"))  # 2, wh, ww
        coords_flatten = torch.flatten(coords, 1)  # 2, N
        relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]  # 2, N, N
        relative_coords = relative_coords.permute(1, 2, 0).contiguous()
        relative_coords[:, :, 0] += wh - 1
        relative_coords[:, :, 1] += ww - 1
        relative_coords[:, :, 0] *= 2 * ww - 1
        self.register_buffer("relative_position_index", relative_coords.sum(-1), persistent=persistent_index)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x, mask=None):
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_drop(self.softmax(attn))
        x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj_drop(self.proj(x))


def _randomize(module):
    """Non-trivial LayerNorm / bias values, so a wrong norm or a dropped bias cannot hide."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.normal_(0, 0.1)


# ---------------------------------------------------------------------------------------- official style

class OfficialBlock(nn.Module):
    def __init__(self, dim, input_resolution, num_heads, window_size=7, shift_size=0, mlp_ratio=4.0):
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        if min(self.input_resolution) <= self.window_size:
            self.shift_size = 0
            self.window_size = min(self.input_resolution)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LiteralWindowAttention(dim, self.window_size, num_heads)
        self.drop_path = nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = LiteralMlp(dim, int(dim * mlp_ratio))
        if self.shift_size > 0:
            H, W = self.input_resolution
            attn_mask = build_attn_mask(H, W, self.window_size, self.window_size, self.shift_size, self.shift_size)
        else:
            attn_mask = None
        self.register_buffer("attn_mask", attn_mask)

    def forward(self, x):
        H, W = self.input_resolution
        B, L, C = x.shape
        assert L == H * W, "input feature has wrong size"
        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        if self.shift_size > 0:
            shifted_x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        else:
            shifted_x = x
        x_windows = window_partition(shifted_x, self.window_size, self.window_size)
        x_windows = x_windows.view(-1, self.window_size * self.window_size, C)
        attn_windows = self.attn(x_windows, mask=self.attn_mask)
        attn_windows = attn_windows.view(-1, self.window_size, self.window_size, C)
        shifted_x = window_reverse(attn_windows, self.window_size, self.window_size, H, W)
        if self.shift_size > 0:
            x = torch.roll(shifted_x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        else:
            x = shifted_x
        x = shortcut + self.drop_path(x.view(B, H * W, C))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class OfficialPatchMerging(nn.Module):
    def __init__(self, input_resolution, dim):
        super().__init__()
        self.input_resolution = input_resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x):
        H, W = self.input_resolution
        B, L, C = x.shape
        x = x.view(B, H, W, C)
        x0 = x[:, 0::2, 0::2, :]
        x1 = x[:, 1::2, 0::2, :]
        x2 = x[:, 0::2, 1::2, :]
        x3 = x[:, 1::2, 1::2, :]
        x = torch.cat([x0, x1, x2, x3], -1).view(B, -1, 4 * C)
        return self.reduction(self.norm(x))


class OfficialLayer(nn.Module):
    def __init__(self, dim, input_resolution, depth, num_heads, window_size, downsample):
        super().__init__()
        self.blocks = nn.ModuleList([
            OfficialBlock(dim, input_resolution, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2)
            for i in range(depth)
        ])
        self.downsample = OfficialPatchMerging(input_resolution, dim) if downsample else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbedLiteral(nn.Module):
    def __init__(self, patch_size, in_chans, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)


class OfficialSwin(nn.Module):
    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dim=96,
                 depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7):
        super().__init__()
        self.patch_embed = PatchEmbedLiteral(patch_size, in_chans, embed_dim)
        res = img_size // patch_size
        self.layers = nn.ModuleList()
        for i in range(len(depths)):
            r = res // 2 ** i
            self.layers.append(OfficialLayer(embed_dim * 2 ** i, (r, r), depths[i], num_heads[i], window_size,
                                             downsample=i < len(depths) - 1))
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(self.num_features, num_classes)
        _randomize(self)

    def forward(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # B, L, C
        x = self.patch_embed.norm(x)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        x = torch.flatten(self.avgpool(x.transpose(1, 2)), 1)
        return self.head(x)


# -------------------------------------------------------------------------------------------- timm style

class TimmBlock(nn.Module):
    """NHWC block; roll, then pad; per-dim shrink; mask over the padded map of the actual input."""

    def __init__(self, dim, input_resolution, num_heads, window_size=7, shift_size=0, mlp_ratio=4.0):
        super().__init__()
        self.input_resolution = input_resolution
        ws, ss = to_pair(window_size), to_pair(shift_size)
        self.window_size = tuple(r if r <= w else w for r, w in zip(input_resolution, ws))
        self.shift_size = tuple(0 if r <= w else s for r, w, s in zip(input_resolution, self.window_size, ss))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LiteralWindowAttention(dim, self.window_size, num_heads, persistent_index=False)
        self.drop_path1 = nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = LiteralMlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = nn.Identity()

    def _attn(self, x):
        B, H, W, C = x.shape
        wh, ww = self.window_size
        sh, sw = self.shift_size
        if sh or sw:
            shifted_x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        else:
            shifted_x = x
        pad_h, pad_w = (wh - H % wh) % wh, (ww - W % ww) % ww
        shifted_x = F.pad(shifted_x, (0, 0, 0, pad_w, 0, pad_h))
        _, Hp, Wp, _ = shifted_x.shape
        mask = build_attn_mask(Hp, Wp, wh, ww, sh, sw).to(x) if (sh or sw) else None
        x_windows = window_partition(shifted_x, wh, ww).view(-1, wh * ww, C)
        attn_windows = self.attn(x_windows, mask=mask).view(-1, wh, ww, C)
        shifted_x = window_reverse(attn_windows, wh, ww, Hp, Wp)[:, :H, :W, :].contiguous()
        if sh or sw:
            return torch.roll(shifted_x, shifts=(sh, sw), dims=(1, 2))
        return shifted_x

    def forward(self, x):
        B, H, W, C = x.shape
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class TimmPatchMerging(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        B, H, W, C = x.shape
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class TimmStage(nn.Module):
    def __init__(self, dim, input_resolution, depth, num_heads, window_size, downsample):
        super().__init__()
        if downsample:
            self.downsample = TimmPatchMerging(dim // 2)
            # timm (>= 1.0.30): the nominal resolution (window shrinking) is the padded map's, rounded up
            input_resolution = tuple((r + 1) // 2 for r in input_resolution)
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[
            TimmBlock(dim, input_resolution, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2)
            for i in range(depth)
        ])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class TimmHead(nn.Module):
    def __init__(self, dim, num_classes):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x):
        return self.fc(x.mean(dim=(1, 2)))


class TimmSwin(nn.Module):
    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dim=96,
                 depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7):
        super().__init__()
        self.patch_embed = PatchEmbedLiteral(patch_size, in_chans, embed_dim)
        H, W = to_pair(img_size)
        res = (H // patch_size, W // patch_size)
        stages = []
        for i in range(len(depths)):
            stages.append(TimmStage(embed_dim * 2 ** i, res, depths[i], num_heads[i], window_size, downsample=i > 0))
            if i > 0:
                res = tuple((r + 1) // 2 for r in res)
        self.layers = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(embed_dim * 2 ** (len(depths) - 1))
        self.head = TimmHead(embed_dim * 2 ** (len(depths) - 1), num_classes)
        _randomize(self)

    def forward(self, x):
        x = self.patch_embed.norm(self.patch_embed.proj(x).permute(0, 2, 3, 1))  # B, H, W, C
        x = self.norm(self.layers(x))
        return self.head(x)


# --------------------------------------------------------------------------------------- detection style

class DetectionBlock(nn.Module):
    def __init__(self, dim, num_heads, window_size=7, shift_size=0, mlp_ratio=4.0):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LiteralWindowAttention(dim, window_size, num_heads)
        self.drop_path = nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = LiteralMlp(dim, int(dim * mlp_ratio))
        self.H = None
        self.W = None

    def forward(self, x, mask_matrix):
        B, L, C = x.shape
        H, W = self.H, self.W
        assert L == H * W, "input feature has wrong size"
        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        ws = self.window_size
        pad_r = (ws - W % ws) % ws
        pad_b = (ws - H % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        _, Hp, Wp, _ = x.shape
        if self.shift_size > 0:
            shifted_x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            attn_mask = mask_matrix
        else:
            shifted_x = x
            attn_mask = None
        x_windows = window_partition(shifted_x, ws, ws).view(-1, ws * ws, C)
        attn_windows = self.attn(x_windows, mask=attn_mask).view(-1, ws, ws, C)
        shifted_x = window_reverse(attn_windows, ws, ws, Hp, Wp)
        if self.shift_size > 0:
            x = torch.roll(shifted_x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        else:
            x = shifted_x
        if pad_r > 0 or pad_b > 0:
            x = x[:, :H, :W, :].contiguous()
        x = shortcut + self.drop_path(x.view(B, H * W, C))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class DetectionLayer(nn.Module):
    """A detection-style stage: builds the mask over the padded map, sets blk.H / blk.W, calls blocks."""

    def __init__(self, dim, depth, num_heads, window_size=7):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList([
            DetectionBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2) for i in range(depth)
        ])
        _randomize(self)

    def forward(self, x, H, W):
        ws = self.window_size
        Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
        attn_mask = build_attn_mask(Hp, Wp, ws, ws, self.shift_size, self.shift_size).to(x)
        for blk in self.blocks:
            blk.H, blk.W = H, W
            x = blk(x, attn_mask)
        return x
