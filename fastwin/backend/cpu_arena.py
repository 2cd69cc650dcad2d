"""fastwin's CPU activation arena (csrc/cpu/activation_arena.cpp): freed activations kept for the next forward.

With glibc's defaults every large activation of a CPU inference is a fresh mapping whose pages fault on
first touch: ~1,600 faults per UniFormer-S forward at batch 1, ~48,000 for Swin-T at batch 8, about
2.8 us of process CPU time each on this project's AMD EPYC VM. ONNX Runtime and OpenVINO keep freed
buffers in arenas of their own. Inside `scope()` torch's CPU allocations come from size-class free lists
that keep every block freed inside a scope (up to `FASTWIN_CPU_ARENA_MB`, default 1024 MB of kept memory), so a
repeated forward reuses warm memory: measured 1.03-1.07x (UniFormer-S / Swin-T, batch 1) and 1.10x
(Swin-T, batch 8) per forward, 1 thread, interleaved in one process.

fastwin's models open a scope around their forward when it is an inference on CPU (grad mode off, not
under torch.compile); `scope()` is public for any other inference (a timm model with fastwin blocks
swapped in). Outside a scope torch's default allocator serves every allocation unchanged; the memory a
scope kept stays with the process until `release()`. `FASTWIN_CPU_ARENA=0` turns the arena off.
"""
from __future__ import annotations

import contextlib
import os
from typing import Dict, Optional

import torch

__all__ = ["release", "scope", "scope_for", "stats"]

_state: Dict[str, Optional[object]] = {}


def _module():
    """fastwin._C when it has the arena and it is not turned off, else None (looked up once)."""
    if "module" not in _state:
        module = None
        if os.environ.get("FASTWIN_CPU_ARENA", "1") != "0":
            from .extension import load_cpu

            if load_cpu() is None:
                from .. import _C

                if getattr(_C, "arena_supported", lambda: False)():
                    module = _C
        _state["module"] = module
    return _state["module"]


@contextlib.contextmanager
def _open(module):
    entered = module.arena_enter()  # False: another allocator than torch's default is installed
    try:
        yield
    finally:
        if entered:
            module.arena_exit()


def scope():
    """Context manager: CPU allocations inside come from the arena, and blocks freed while a scope is open
    are kept for reuse (a block freed later, such as a forward's output, is freed). A no-op without the compiled extension, off glibc, with `FASTWIN_CPU_ARENA=0`, or
    when a non-default CPU allocator is installed. Scopes nest and may be open in several threads."""
    module = _module()
    return contextlib.nullcontext() if module is None else _open(module)


def scope_for(x) -> contextlib.AbstractContextManager:
    """`scope()` when a forward on `x` is an inference fastwin's models run in the arena: a plain CPU
    tensor, autograd off, not under torch.compile; else a no-op context."""
    if torch.compiler.is_compiling() or type(x) is not torch.Tensor:  # first: fx Proxies, fake tensors
        return contextlib.nullcontext()
    if x.device.type != "cpu" or torch.is_grad_enabled():
        return contextlib.nullcontext()
    return scope()


def release() -> int:
    """Free every block the arena keeps; returns the bytes freed (0 without the arena)."""
    module = _module()
    return 0 if module is None else int(module.arena_release())


def stats() -> Dict[str, int]:
    """kept_bytes, limit_bytes, hits and misses (blocks served from / not found in the kept ones), depth
    (open scopes) and installed (1 once the arena is torch's CPU allocator); {} without the arena."""
    module = _module()
    return {} if module is None else dict(module.arena_stats())
