"""Helpers shared by the test files (one definition each): relative error, random weights, a tiny
Swin, the backend lists, and poisoning of what the Triton launchers allocate."""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple, Union

import pytest
import torch

import fastwin
from fastwin.dispatch import BACKENDS

# Every backend that works here but the reference, in the dispatcher's order.
FAST: List[str] = [name for name in BACKENDS if name != "reference" and fastwin.backends()[name]]
# (backend, device type) for every backend on every device type it runs on (cpp: CPU; cuda: CUDA;
# triton: CUDA, or the CPU through its interpreter), whether or not this machine has them.
BACKEND_DEVICES: List[Tuple[str, str]] = [(name, device) for device in ("cpu", "cuda") for name in BACKENDS
                                          if (name, device) not in (("cuda", "cpu"), ("cpp", "cuda"))]

Tensors = Union[torch.Tensor, Sequence[torch.Tensor]]


def rel_err(a: Tensors, b: Tensors) -> float:
    """max |a - b| / max |b| (in fp64); for sequences the largest over pairs (inf if the shapes differ)."""
    if not isinstance(a, torch.Tensor):
        if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
            return float("inf")
        return max((rel_err(x, y) for x, y in zip(a, b)), default=0.0)
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()


def randomize(model: torch.nn.Module, seed: int = 0, bias_std: float = 0.1) -> torch.nn.Module:
    """Random weights (and BatchNorm statistics) that make every part matter, in place; returns `model`.

    Fresh inits would hide mistakes: zero biases, identity norms, timm's zero post-norms / heads /
    layer scales (a block becomes the identity, under which any attention passes). Matrices get
    fan-in-scaled normals, 1-D weights / gains / scales and running variances values in [0.5, 1.5),
    Swin V2 logit scales [0, log 100) (saturated softmaxes included), everything else normals of
    `bias_std`.
    """
    gen = torch.Generator().manual_seed(seed)
    tensors = list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers()
                                                if b.is_floating_point() and n.endswith(("running_mean", "running_var"))]
    with torch.no_grad():
        for name, p in tensors:
            if name.endswith("logit_scale"):
                v = torch.rand(p.shape, generator=gen) * math.log(100.0)
            elif p.dim() >= 2:
                v = torch.randn(p.shape, generator=gen) * p[0].numel() ** -0.5
            elif name.endswith(("weight", "running_var")) or "gamma" in name or "scale" in name:
                v = torch.rand(p.shape, generator=gen) + 0.5
            else:
                v = torch.randn(p.shape, generator=gen) * bias_std
            p.copy_(v.to(p))
    return model


def tiny_swin(img_size: int = 48, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), **kwargs):
    """A Swin small enough for the Triton interpreter: patch 4, window 4, 16 channels, 5 classes.

    At 48 px the maps are 12, 6 (padded to 8), 3 and 2 (windows shrink, no shift): every code path.
    """
    from fastwin.models.swin import SwinTransformer

    kwargs = dict(dict(patch_size=4, embed_dim=16, window_size=4, num_classes=5, drop_path_rate=0.0), **kwargs)
    return SwinTransformer(img_size=img_size, depths=depths, num_heads=num_heads, **kwargs)


def _poisoned_empty(shape, like, dtype=None):
    return torch.full(shape, float("nan"), device=like.device, dtype=dtype or like.dtype)


@pytest.fixture
def poison(monkeypatch):
    """The Triton launchers fill what they allocate with NaN, so any element a kernel fails to write
    shows up (SPEC §6: poison outputs before kernels write them)."""
    launch = pytest.importorskip("fastwin.kernels.triton.launch")
    monkeypatch.setattr(launch, "empty", _poisoned_empty)
