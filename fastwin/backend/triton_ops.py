"""The Triton ops `fastwin::<op>_fwd / _bwd`: each is its launcher in `fastwin.kernels.triton`
(`<op>_fwd_triton`, `<op>_bwd_triton`, arguments in the schema's order) registered with the schema of
its row in `fastwin.contract`; autograd comes from the same rows (`library.register_autograd("fastwin")`).

On GPUs the ops are `torch.library.triton_op`s launching through `wrap_triton`, so
`torch.compile(fullgraph=True)` traces into the kernels and the fake implementation is derived from
the launcher. Under TRITON_INTERPRET=1 (CPU tests) nothing needs tracing and `wrap_triton` is not
used at all (torch <= 2.12 rejects interpreted kernels; newer torch hands them back unwrapped, and
they cannot run on fake tensors); there the ops are opaque `custom_op`s whose fake is the launcher
itself, which skips its launches on fake tensors (`kernels.triton.launch.run`), so fake and real output
metadata cannot diverge, and the interpreter's `tl.dot` sums in the GPU's order
(`kernels.triton.interpreter_dot`), so a product computed in two kernels' tiles rounds the same in both.

Importing this module registers the ops; `fastwin.backend` does that at `import fastwin` when triton
is importable and a GPU (or the interpreter) can run it.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..contract import FUSED
from ..kernels.triton import dwconv, dwconv_layernorm, interpreter_dot, interpreting, window_attention_launchers

NAMESPACE = "fastwin"
if interpreting():
    interpreter_dot.install()
LAUNCHERS = (window_attention_launchers, dwconv, dwconv_layernorm)  # where `<op>_<fwd|bwd>_triton` live


def _define(name: str, launcher: Callable, schema: str):
    """Register `launcher` as `fastwin::<name>` (triton_op on GPU; custom_op + fake in the interpreter)."""
    qualname = f"{NAMESPACE}::{name}"
    if interpreting():
        op = torch.library.custom_op(qualname, launcher, mutates_args=(), schema=schema)
        op.register_fake(launcher)
        return op
    return torch.library.triton_op(qualname, launcher, mutates_args=(), schema=schema)


def _launcher(name: str):
    return next((getattr(m, f"{name}_triton") for m in LAUNCHERS if hasattr(m, f"{name}_triton")), None)


OPS = {
    f"{op.name}_{kind}": _define(f"{op.name}_{kind}", _launcher(f"{op.name}_{kind}"), schema)
    for op in FUSED if _launcher(f"{op.name}_fwd") is not None
    for kind, schema in (("fwd", op.fwd_schema), ("bwd", op.bwd_schema))
}
