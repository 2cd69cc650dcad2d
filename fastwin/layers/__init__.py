"""Layers: thin modules (projection, reshape, call a functional op). They never branch on backends."""
from .attention import Attention
from .drop import DropPath, drop_path
from .mlp import Mlp
from .patch_embed import PatchEmbed
from .swin_block import PatchMerging, SwinTransformerBlock
from .window_attention import WindowAttention

__all__ = ["Attention", "DropPath", "drop_path", "Mlp", "PatchEmbed", "PatchMerging", "SwinTransformerBlock",
           "WindowAttention"]
