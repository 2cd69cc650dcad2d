"""How every Triton launcher in fastwin launches a kernel and allocates what the kernels write.

One fake-tensor convention for all launchers: a launcher is an ordinary function of tensors and ints
that allocates its outputs and calls `run` for each kernel. On fake (or meta) tensors `run` skips the
launch, so the same function is a Triton op's real implementation and its fake one
(`fastwin.backend.triton_ops`).
"""
from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import is_fake
from torch.library import wrap_triton

from . import interpreting


def run(kernel, grid, *args, **kwargs):
    """Launch `kernel[grid](*args, **kwargs)`: through `wrap_triton` on a GPU (traceable by torch.compile
    / make_fx), directly in the interpreter.

    Under TRITON_INTERPRET=1 the ops are opaque custom_ops (backend/triton_ops.py), so nothing traces
    the launch: the kernel runs as is. `wrap_triton` must not see it there: torch <= 2.12 rejects
    interpreted kernels outright ("wrap_triton only works on functions annotated with triton.jit").
    Fake tensors only need the output allocations, so their launch is skipped.
    """
    if interpreting():
        if not any(torch.is_tensor(a) and (is_fake(a) or a.device.type == "meta") for a in args):
            kernel[grid](*args, **kwargs)
        return
    wrap_triton(kernel)[grid](*args, **kwargs)


def empty(shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
    """An uninitialized buffer for a kernel to write, on `like`'s device (tests poison it with NaN)."""
    return torch.empty(shape, device=like.device, dtype=dtype or like.dtype)
