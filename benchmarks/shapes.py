"""Real stage shapes of the benchmarked models, and the small CPU stand-ins.

Swin stage s (0-based) of a model with embed dim E, patch 4, image S: map S/4/2^s, channels E*2^s,
heads as configured, window 7 (12 for the 384 models); odd blocks shift by window // 2. Stage 4 at 224
(7x7 map, window 7) shrinks to the map and does not shift.
"""
from __future__ import annotations

import dataclasses
from typing import List

SWIN = {  # name: (embed dim, heads per stage)
    "swin_t": (96, (3, 6, 12, 24)),
    "swin_s": (96, (3, 6, 12, 24)),
    "swin_b": (128, (4, 8, 16, 32)),
}


@dataclasses.dataclass(frozen=True)
class WindowCase:
    name: str
    batch: int
    H: int
    W: int
    heads: int
    head_dim: int
    window: int
    shift: int

    @property
    def channels(self):
        return self.heads * self.head_dim


def swin_cases(size_set: str) -> List[WindowCase]:
    if size_set == "small":
        # CPU stand-ins: Swin-T stage 1 and stage 3 geometry at a small batch and map.
        return [
            WindowCase("swin_t-s1-small", 2, 28, 28, 3, 32, 7, 3),
            WindowCase("swin_t-s3-small", 2, 14, 14, 12, 32, 7, 3),
        ]
    cases = []
    for model, (embed, heads) in SWIN.items():
        for img, window, batch in ((224, 7, 128), (384, 12, 32)):
            for s in range(4):
                hw = img // 4 // 2**s
                win = min(window, hw)
                shift = 0 if hw <= window else window // 2
                cases.append(WindowCase(f"{model}-{img}-s{s + 1}", batch, hw, hw, heads[s], embed // heads[0], win, shift))
    return cases


@dataclasses.dataclass(frozen=True)
class GlobalCase:
    name: str
    batch: int
    tokens: int
    heads: int
    head_dim: int


def global_cases(size_set: str) -> List[GlobalCase]:
    if size_set == "small":
        return [GlobalCase("uniformer_s-s3-small", 2, 196, 5, 64), GlobalCase("vit_s-small", 2, 197, 6, 64)]
    return [
        GlobalCase("uniformer_s-s3", 64, 196, 5, 64),
        GlobalCase("uniformer_s-s4", 64, 49, 8, 64),
        GlobalCase("vit_s", 64, 197, 6, 64),
        GlobalCase("deit_s-distilled", 64, 198, 6, 64),
        GlobalCase("vit_b-1024", 8, 1024, 12, 64),
    ]


@dataclasses.dataclass(frozen=True)
class ConvCase:
    name: str
    batch: int
    channels: int
    H: int
    W: int
    kernel: int
    residual: bool


def conv_cases(size_set: str) -> List[ConvCase]:
    if size_set == "small":
        return [ConvCase("uniformer_s-s1-pos-small", 2, 64, 28, 28, 3, True),
                ConvCase("uniformer_s-s1-attn-small", 2, 64, 28, 28, 5, False)]
    return [
        ConvCase("uniformer_s-s1-pos", 64, 64, 56, 56, 3, True),
        ConvCase("uniformer_s-s1-attn", 64, 64, 56, 56, 5, False),
        ConvCase("uniformer_s-s2-pos", 64, 128, 28, 28, 3, True),
        ConvCase("uniformer_s-s2-attn", 64, 128, 28, 28, 5, False),
        ConvCase("uniformer_s-s3-pos", 64, 320, 14, 14, 3, True),
        ConvCase("uniformer_s-s4-pos", 64, 512, 7, 7, 3, True),
    ]


MODELS_SMALL = [("swin_tiny_patch4_window7_224", 2, 112), ("uniformer_small", 2, 112), ("deit_small_patch16_224", 2, 112)]
MODELS_FULL = [
    ("swin_tiny_patch4_window7_224", 256, 224),
    ("swin_small_patch4_window7_224", 128, 224),
    ("swin_base_patch4_window7_224", 128, 224),
    ("uniformer_small", 256, 224),
    ("uniformer_base", 128, 224),
    ("vit_small_patch16_224", 256, 224),
    ("deit_small_patch16_224", 256, 224),
]
