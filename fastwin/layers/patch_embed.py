"""Image to patch embedding: Conv2d(k = s = patch) + optional norm, timm names (`proj`, `norm`)."""
from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from . import checks, projection


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def pad_to_patch(x: torch.Tensor, patch_size, pad: bool) -> torch.Tensor:
    """[B, C, H, W] zero-padded bottom/right to a multiple of `patch_size` (pad=True), else ValueError
    unless it is one already. `torch.fx.wrap`ped: it branches on the size, so a traced graph calls it
    (one node) and keeps working for every input size."""
    ph, pw = patch_size
    H, W = x.shape[-2:]
    if H % ph or W % pw:
        if not pad:
            raise ValueError(f"input size {H}x{W} is not divisible by the patch size {ph}x{pw}")
        x = F.pad(x, (0, (-W) % pw, 0, (-H) % ph))
    return x


torch.fx.wrap("pad_to_patch")


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
        x = projection.patch_conv(self.proj, pad_to_patch(x, self.patch_size, self.pad)).permute(0, 2, 3, 1)
        x = self.norm(x)
        return x.flatten(1, 2) if self.flatten else x
