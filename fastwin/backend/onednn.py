"""CPU inference GEMMs through oneDNN with prepacked weights (torch's `mkldnn` ops), for the cpp backend.

On this project's AMD EPYC (Zen 4) torch's `F.linear` runs MKL sgemm, and `torch.ops.mkldnn.
_linear_pointwise` on a weight reordered once into oneDNN's blocked layout runs the same GEMMs
1.08-1.31x faster (Swin-T shapes, 1 thread) and applies GELU or a residual add in the GEMM's
epilogue, so the activation never makes a second pass over memory. 1x1 convolutions on NCHW maps
(UniFormer's local blocks) get the GELU epilogue through `_convolution_pointwise`.

The fast path runs only when nothing can tell it apart from the reference except speed:
fp32 CPU tensors of the plain Tensor type, no autograd recording for these inputs, no autocast (which
would have computed the reference in bf16), no torch.compile / fx / jit tracing, no export, no
functorch transform or forward-mode AD level. Anywhere else `run_*` return None and the caller runs
the reference.

Packed weights are cached per weight tensor, keyed by its identity and checked against its version
counter and data pointer on every call, so an in-place update (`optimizer.step()`, `load_state_dict`,
`weight.data = ...`) repacks on the next call; an entry dies with its weight. The cache holds one
packed copy of every weight that has run (Swin-T: +110 MB); `clear_cache()` drops them.

The activations themselves come from fastwin's CPU arena in its models' inference forwards
(`fastwin.backend.cpu_arena`), not from fresh pages per tensor.
"""
from __future__ import annotations

import weakref
from typing import Dict, NamedTuple, Optional

import torch

__all__ = ["clear_cache", "conv1x1_gelu", "generation", "linear", "linear_packed", "pack_linear", "tracing_or_transformed",
           "usable"]

_ACTIVATIONS = {None: ("none", ""), "none": ("gelu", "none"), "tanh": ("gelu", "tanh")}  # GELU form -> oneDNN attr


class _Packed(NamedTuple):
    ref: weakref.ref
    version: int
    data_ptr: int
    packed: torch.Tensor


_cache: Dict[int, _Packed] = {}
_generation = [0]  # bumped by clear_cache: layers that keep packed weights themselves drop theirs


def clear_cache() -> None:
    """Drop every packed weight (they are rebuilt on the next inference call)."""
    _cache.clear()
    _generation[0] += 1


def generation() -> int:
    """How many times `clear_cache` ran: a layer holding packed weights (`fastwin.layers.inference_plan`)
    rebuilds them when this changed."""
    return _generation[0]


def _available() -> bool:
    return torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


def _plain(t: Optional[torch.Tensor]) -> bool:
    return t is None or (type(t) in (torch.Tensor, torch.nn.Parameter) and t.dtype == torch.float32
                         and t.is_cpu and t.layout == torch.strided)


def tracing_or_transformed() -> bool:
    """jit or fx tracing, a forward-AD level, or a functorch transform (vmap / grad / jvp) is active."""
    # the private queries are read defensively: on a torch without them the answer is "maybe", so no
    if torch.jit.is_tracing() or getattr(torch.fx._symbolic_trace, "is_fx_symbolic_tracing", lambda: True)():
        return True
    if getattr(torch.autograd.forward_ad, "_current_level", 0) >= 0:  # inside `forward_ad.dual_level()`
        return True
    peek = getattr(torch._C._functorch, "peek_interpreter_stack", None)
    return peek is None or peek() is not None  # vmap / grad / jvp


def usable(x: torch.Tensor, weight: torch.Tensor, *others: Optional[torch.Tensor]) -> bool:
    """Whether the oneDNN path may run for input `x`, `weight` and `others` (bias, residual).

    A weight that is an inference tensor takes the reference: it has no version counter, so a packed
    copy of it could not be invalidated. Export never gets here: `fastwin.dispatch` runs the reference
    while a model is exported.
    """
    if torch.compiler.is_compiling():  # first: nothing below needs tracing
        return False
    tensors = (x, weight) + others
    if not (_available() and x.dim() >= 2 and x.numel() and all(_plain(t) for t in tensors)):
        return False
    if weight.is_inference() or torch.is_autocast_enabled("cpu"):
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return False
    return not tracing_or_transformed()


def _packed(weight: torch.Tensor, pack) -> torch.Tensor:
    key = id(weight)
    hit = _cache.get(key)
    version, ptr = weight._version, weight.data_ptr()
    if hit is not None and hit.ref() is weight and hit.version == version and hit.data_ptr == ptr:
        return hit.packed

    def forget(ref, key=key):
        entry = _cache.get(key)
        if entry is not None and entry.ref is ref:
            del _cache[key]

    packed = pack(weight.detach())
    _cache[key] = _Packed(weakref.ref(weight, forget), version, ptr, packed)
    return packed


def _pack_linear(w: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), None)


def _pack_conv1x1(w: torch.Tensor) -> torch.Tensor:
    return torch._C._nn.mkldnn_reorder_conv2d_weight(w.contiguous().to_mkldnn(), [0, 0], [1, 1], [1, 1], 1)


def pack_linear(weight: torch.Tensor) -> torch.Tensor:
    """`weight` [N, K] in oneDNN's blocked layout for `linear_packed` (cached, see the module docstring)."""
    return _packed(weight, _pack_linear)


# the overloads themselves: OpOverloadPacket.__call__ is ~1 us of Python per call (74 calls per UniFormer-S forward)
_linear_pointwise = torch.ops.mkldnn._linear_pointwise.default if torch.backends.mkldnn.is_available() else None
_linear_add = torch.ops.mkldnn._linear_pointwise.binary if torch.backends.mkldnn.is_available() else None


def linear_packed(x: torch.Tensor, packed: torch.Tensor, bias: Optional[torch.Tensor], gelu: Optional[str] = None,
                  residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`linear` on a weight that `pack_linear` packed (a caller that keeps it checks its sources itself)."""
    x = x.contiguous()
    if residual is not None:
        return _linear_add(x, residual.contiguous(), packed, bias, "add")
    attr, algorithm = _ACTIVATIONS[gelu]
    return _linear_pointwise(x, packed, bias, attr, [], algorithm)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], gelu: Optional[str] = None,
           residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`[residual +] act(x @ weight^T + bias)` with a packed weight; act is GELU of form `gelu` or none.

    Args: x [..., K] (usable() said yes); weight [N, K]; bias [N] or None; gelu None, "none" or
    "tanh"; residual [..., N] or None (not with `gelu`). Returns [..., N].
    """
    return linear_packed(x, pack_linear(weight), bias, gelu, residual)


def conv1x1_gelu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], gelu: str) -> torch.Tensor:
    """`gelu(conv2d(x, weight, bias))` for a 1x1, stride-1 convolution on NCHW `x`, GELU form `gelu`.

    Only the GELU epilogue pays on NCHW maps: UniFormer's fc1 shapes (b8, 1 thread) ran 1.2-1.5x faster
    than torch's conv + GELU, but a plain oneDNN 1x1 conv only matched torch's (which is oneDNN's too,
    minus the packing), and the binary add post-op was 1.1-1.45x slower than conv + add (it reorders the
    residual into the blocked layout and back).

    Args: x [B, Cin, H, W] (usable() said yes); weight [Cout, Cin, 1, 1]; bias [Cout] or None; gelu
    "none" (erf) or "tanh". Returns [B, Cout, H, W].
    """
    w = _packed(weight, _pack_conv1x1)
    x = x.contiguous()
    attr, algorithm = _ACTIVATIONS[gelu]
    return torch.ops.mkldnn._convolution_pointwise(x, w, bias, [0, 0], [1, 1], [1, 1], 1, attr, [], algorithm)
