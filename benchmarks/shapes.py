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
    # Full shapes: every Swin-T stage at 224 (SPEC §8 targets), and stage 1 of Swin-B at 224 and 384
    # (window 12). Swin-S has Swin-T's stage shapes. One GPU bench step must fit in ~10 minutes, and
    # each case compiles its torch.compile and FlexAttention baselines.
    cases = []
    for model, img, stages in (("swin_t", 224, (1, 2, 3, 4)), ("swin_b", 224, (1,)), ("swin_b", 384, (1,))):
        embed, heads = SWIN[model]
        window, batch = (7, 128) if img == 224 else (12, 32)
        for s in stages:
            hw = img // 4 // 2 ** (s - 1)
            win = min(window, hw)
            shift = 0 if hw <= window else window // 2
            cases.append(WindowCase(f"{model}-{img}-s{s}", batch, hw, hw, heads[s - 1], embed // heads[0], win, shift))
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


# (model, batch, image size, mode). CPU: the SPEC §8 / issue #15 target cases (batch 8 at 224,
# inference) and small training steps; GPU: the SPEC §8 shapes.
MODELS_SMALL = [
    ("swin_tiny_patch4_window7_224", 8, 224, "infer"),
    ("uniformer_small", 8, 224, "infer"),
    ("deit_small_patch16_224", 8, 224, "infer"),
    ("swin_tiny_patch4_window7_224", 2, 112, "train"),
    ("uniformer_small", 2, 112, "train"),
]
MODELS_FULL = [  # SPEC §8: Swin-T and UniFormer-S inference and training; the larger models, inference
    ("swin_tiny_patch4_window7_224", 256, 224, "infer"),
    ("swin_tiny_patch4_window7_224", 256, 224, "train"),
    ("uniformer_small", 256, 224, "infer"),
    ("uniformer_small", 256, 224, "train"),
    ("swin_base_patch4_window7_224", 128, 224, "infer"),
    ("uniformer_base", 128, 224, "infer"),
    ("deit_small_patch16_224", 256, 224, "infer"),
]
