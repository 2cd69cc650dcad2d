"""Image to patch embedding: Conv2d(k = s = patch) + optional norm, timm names (`proj`, `norm`)."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from . import checks


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class PatchEmbed(nn.Module):
    """[B, C_in, H, W] -> [B, H/p, W/p, D] (flatten=False) or [B, H/p * W/p, D] (flatten=True).

    With `pad=True` the image is zero-padded bottom/right to a multiple of the patch (Swin's
    arbitrary-size behaviour); otherwise a non-multiple size raises ValueError.
    """

    def __init__(self, patch_size=4, in_chans=3, embed_dim=96, norm_layer=None, flatten=True, pad=False):
        super().__init__()
        self.patch_size = _pair(patch_size)
        self.flatten = flatten
        self.pad = pad
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x):
        checks.features(x, self, self.proj.in_channels, ("[B, C, H, W]",), channel_dim=1, label="in_chans")
        ph, pw = self.patch_size
        H, W = x.shape[-2:]
        if H % ph or W % pw:
            if not self.pad:
                raise ValueError(f"input size {H}x{W} is not divisible by the patch size {ph}x{pw}")
            x = F.pad(x, (0, (-W) % pw, 0, (-H) % ph))
        x = self.proj(x).permute(0, 2, 3, 1)  # [B, H', W', D]
        x = self.norm(x)
        return x.flatten(1, 2) if self.flatten else x
