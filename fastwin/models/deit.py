"""DeiT ("Training data-efficient image transformers & distillation through attention").

The non-distilled DeiT models are ViTs (timm configs). The distilled ones add a distillation token
after the class token (its own position embedding, `dist_token`) and a second classifier
`head_dist`. Training returns `(cls_logits, dist_logits)` for `fastwin.losses.DistillationLoss`;
eval returns their mean. Parameter names as timm's `VisionTransformerDistilled` / the DeiT repo.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .registry import pretrained_cfg, register_model, register_pretrained_cfgs
from .vit import VisionTransformer

__all__ = ["VisionTransformerDistilled"]


class VisionTransformerDistilled(VisionTransformer):
    """ViT with class + distillation tokens and two heads.

    Takes VisionTransformer's arguments; `global_pool` must be "token" (each head reads its token).

    forward: [B, C, H, W] -> training (and `distilled_training`): (cls_logits, dist_logits), each
    [B, num_classes]; otherwise (cls_logits + dist_logits) / 2.
    """

    def __init__(self, *args, **kwargs):
        if kwargs.get("global_pool", "token") != "token" or kwargs.get("class_token", True) is not True:
            raise ValueError("distilled DeiT needs global_pool='token' and a class token")
        super().__init__(*args, **kwargs)
        self.num_prefix_tokens = 2
        self.dist_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        n_grid = self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, n_grid + self.num_prefix_tokens, self.embed_dim))
        self.head_dist = nn.Linear(self.embed_dim, self.num_classes) if self.num_classes > 0 else nn.Identity()
        # DeiT returns both logits whenever the model trains; timm gates it with this flag.
        self.distilled_training = True
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.dist_token, std=0.02)
        if isinstance(self.head_dist, nn.Linear):
            nn.init.trunc_normal_(self.head_dist.weight, std=0.02)
            nn.init.zeros_(self.head_dist.bias)

    def set_distilled_training(self, enable: bool = True):
        self.distilled_training = enable

    def get_classifier(self):
        return self.head, self.head_dist

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        """New heads; `global_pool` may be None, "token" or "" (accepted as timm does; both heads
        always read their tokens)."""
        if global_pool not in (None, "", "token"):
            raise ValueError(f"distilled DeiT reads the class and distillation tokens: global_pool must be None, '' "
                             f"or 'token', got {global_pool!r}")
        super().reset_classifier(num_classes)
        ref = self.pos_embed
        self.head_dist = (nn.Linear(self.embed_dim, num_classes, device=ref.device, dtype=ref.dtype)
                          if num_classes > 0 else nn.Identity())

    def _prefix_tokens(self, batch: int):
        return [self.cls_token.expand(batch, -1, -1), self.dist_token.expand(batch, -1, -1)]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        """Tokens [B, 2 + N, D] -> logits (see class docstring); `pre_logits`: mean of the two tokens [B, D]."""
        x, x_dist = self.head_drop(x[:, 0]), self.head_drop(x[:, 1])
        if pre_logits:
            return (x + x_dist) / 2
        x, x_dist = self.head(x), self.head_dist(x_dist)
        if self.training and self.distilled_training:
            return x, x_dist
        return (x + x_dist) / 2


# ---------------------------------------------------------------------------------------------------
# default configs (timm's)

register_pretrained_cfgs({
    f"deit_{size}{kind}_patch16_224": pretrained_cfg(224, tag="fb_in1k",
                                                     classifier=("head", "head_dist") if kind else "head")
    for size in ("tiny", "small", "base") for kind in ("", "_distilled")
})


# ---------------------------------------------------------------------------------------------------
# entry points (the checkpoint filter of VisionTransformer applies to both classes)

_CFGS = {
    "tiny": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
    "small": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "base": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
}


def _create(size: str, distilled: bool, **kwargs):
    cls = VisionTransformerDistilled if distilled else VisionTransformer
    return cls(**dict(_CFGS[size], **kwargs))


@register_model
def deit_tiny_patch16_224(**kwargs) -> VisionTransformer:
    return _create("tiny", False, **kwargs)


@register_model
def deit_small_patch16_224(**kwargs) -> VisionTransformer:
    return _create("small", False, **kwargs)


@register_model
def deit_base_patch16_224(**kwargs) -> VisionTransformer:
    return _create("base", False, **kwargs)


@register_model
def deit_tiny_distilled_patch16_224(**kwargs) -> VisionTransformerDistilled:
    return _create("tiny", True, **kwargs)


@register_model
def deit_small_distilled_patch16_224(**kwargs) -> VisionTransformerDistilled:
    return _create("small", True, **kwargs)


@register_model
def deit_base_distilled_patch16_224(**kwargs) -> VisionTransformerDistilled:
    return _create("base", True, **kwargs)
