"""Python side of the C++ ops `fastwin_C::<op>_fwd / _bwd` (schemas in csrc/): their fake (meta)
kernels, so torch.compile can trace them, and the shared autograd (`library.register_autograd`),
both from the ops' rows in `fastwin.contract`.

`register()` runs once, as soon as `fastwin._C` is loaded (at `import fastwin`, or after a JIT build).
"""
from __future__ import annotations

import torch

from ..contract import FUSED, default_fake_bwd
from . import library

NAMESPACE = "fastwin_C"
_done = []


def _register_fakes():
    for op in FUSED:
        fwd, bwd = f"{NAMESPACE}::{op.name}_fwd", f"{NAMESPACE}::{op.name}_bwd"
        if op.fake is None or not (library.has_op(NAMESPACE, f"{op.name}_fwd")
                                   and library.has_op(NAMESPACE, f"{op.name}_bwd")):
            continue  # the op has no C++ form (or a JIT build of older sources lacks it)
        torch.library.register_fake(fwd)(op.fake)
        torch.library.register_fake(bwd)(op.fake_bwd or default_fake_bwd(op))


def register() -> None:
    """Fake kernels + autograd for the fastwin_C ops; idempotent; call after `fastwin._C` loaded."""
    if not _done:
        _done.append(True)
        _register_fakes()
        library.register_autograd(NAMESPACE)
