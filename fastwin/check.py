"""`fastwin check`: every available backend against the reference on this machine.

For each op case and dtype the device supports, run the backend (strictly, no silent fallback) and
the reference on the same random inputs, forward and backward, and compare both against an fp64
reference with the SPEC §6 rule: error <= 2 x (error of the reference in the same dtype) + floor.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Tuple

import torch

from . import dispatch, ops

FLOORS = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@dataclasses.dataclass
class CheckRow:
    backend: str
    case: str
    dtype: str
    fwd_err: float = float("nan")
    bwd_err: float = float("nan")
    bound: float = float("nan")
    status: str = "ok"  # ok | MISMATCH | skipped: reason | error: ...


def _cases(device) -> Dict[str, Tuple[Callable, Callable]]:
    """name -> (make_inputs(dtype) -> list of leaf tensors, fn(*inputs) -> tensor or tuple)."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape, scale=1.0):
        return lambda dt: (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dt)

    def swin(order):
        return (
            lambda dt: [rand(2, 10, 9, 3 * 2 * 16)(dt), rand(13 * 13, 2, scale=0.5)(dt), rand(96, scale=0.5)(dt)],
            lambda q, t, b: ops.shifted_window_attention(q, 2, 7, 3, t, b, pad_order=order),
        )

    mask = (torch.rand(4, 16, 16, generator=g) > 0.7).float().mul(-100.0).to(device)
    return {
        "shifted_window_attention w7 s3 10x9 roll_pad": swin("roll_pad"),
        "shifted_window_attention w7 s3 10x9 pad_roll": swin("pad_roll"),
        "window_attention w4 +mask": (
            lambda dt: [rand(8, 16, 3 * 2 * 32)(dt), rand(7 * 7, 2, scale=0.5)(dt)],
            lambda q, t: ops.window_attention(q, 2, 4, t, mask.to(q.dtype)),
        ),
        "attention N=50": (lambda dt: [rand(2, 50, 3 * 2 * 32)(dt)], lambda q: ops.attention(q, 2)),
        "dwconv2d k3 residual": (
            lambda dt: [rand(2, 8, 9, 7)(dt), rand(8, 1, 3, 3, scale=0.3)(dt), rand(8)(dt)],
            lambda x, w, b: ops.dwconv2d(x, w, b, residual=True),
        ),
        "dwconv2d k5 channels_last": (
            lambda dt: [rand(2, 8, 9, 7)(dt).to(memory_format=torch.channels_last),
                        rand(8, 1, 5, 5, scale=0.3)(dt), rand(8)(dt)],
            lambda x, w, b: ops.dwconv2d(x, w, b),
        ),
        "dwconv_layernorm k3": (
            lambda dt: [rand(2, 8, 5, 6)(dt), rand(8, 1, 3, 3, scale=0.3)(dt), rand(8)(dt), rand(8)(dt), rand(8)(dt)],
            lambda x, w, b, lw, lb: ops.dwconv_layernorm(x, w, b, lw, lb),
        ),
    }


def _run(fn, inputs, cotangents=None):
    """Forward and input gradients of fn(*inputs) for the given cotangents."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    if cotangents is None:
        cotangents = [torch.randn(o.shape, generator=torch.Generator().manual_seed(1)).to(o) for o in outs]
    grads = torch.autograd.grad(outs, leaves, [c.to(o.dtype) for c, o in zip(cotangents, outs)], allow_unused=True)
    grads = [torch.zeros_like(x) if gr is None else gr for gr, x in zip(grads, leaves)]
    return outs, grads, cotangents


def _err(a, b):
    return max((x.double() - y.double()).abs().max().item() for x, y in zip(a, b))


def _scale(ts):
    return max(max(t.double().abs().max().item() for t in ts), 1.0)


def device_dtypes(device: torch.device) -> List[torch.dtype]:
    if device.type == "cuda":
        dts = [torch.float32, torch.float16]
        if torch.cuda.is_bf16_supported():
            dts.append(torch.bfloat16)
        return dts
    return [torch.float32, torch.float16, torch.bfloat16]


def count_checks(device: torch.device, backends: List[str]) -> int:
    return len(_cases(device)) * len(device_dtypes(device)) * len(backends)


def run_checks(device: torch.device, backends: Optional[List[str]] = None, progress=None) -> List[CheckRow]:
    table = dispatch.backends()
    names = backends or [n for n in dispatch.BACKENDS if table[n]]
    rows = []
    for case, (make, fn) in _cases(device).items():
        exact_in = make(torch.float64)
        exact_out, exact_grad, cot = _run(lambda *a: _with("reference", fn, a), exact_in)
        for dt in device_dtypes(device):
            low_in = [t.to(dt) for t in exact_in]
            try:
                ref_out, ref_grad, _ = _run(lambda *a: _with("reference", fn, a), low_in, cot)
            except RuntimeError as exc:  # e.g. a CPU op without half support in this torch
                rows.append(CheckRow("reference", case, str(dt)[6:], status=f"skipped: {exc}"[:80]))
                continue
            call = _call_for(fn, low_in)  # the dispatcher's view of this case, the same for every backend
            fwd_bound = 2 * _err(ref_out, exact_out) + FLOORS[dt] * _scale(exact_out)
            bwd_bound = 2 * _err(ref_grad, exact_grad) + FLOORS[dt] * _scale(exact_grad)
            for name in names:
                row = CheckRow(name, case, str(dt)[6:], bound=max(fwd_bound, bwd_bound))
                reason = dispatch.why_not(name, call)
                if reason is not None and name != "reference":
                    row.status = f"skipped: {reason}"
                else:
                    try:
                        out, grad, _ = _run(lambda *a: _with(name, fn, a), low_in, cot)
                        row.fwd_err, row.bwd_err = _err(out, exact_out), _err(grad, exact_grad)
                        if not (row.fwd_err <= fwd_bound and row.bwd_err <= bwd_bound):
                            row.status = "MISMATCH"
                    except Exception as exc:
                        row.status = f"error: {type(exc).__name__}: {exc}"[:120]
                rows.append(row)
                if progress:
                    progress(f"{name} {case} {row.dtype}")
    return rows


def _with(name, fn, args):
    with dispatch.set_backend(name, strict=True):
        return fn(*args)


def _call_for(fn, inputs):
    """The dispatcher's view of this case (learned from one cheap reference run)."""
    with torch.no_grad():
        _with("reference", fn, inputs)
    return dataclasses.replace(ops.last_call(), requires_grad=True)


def format_rows(rows: List[CheckRow]) -> str:
    head = ("backend", "case", "dtype", "fwd err", "bwd err", "bound", "status")
    body = [(r.backend, r.case, r.dtype, f"{r.fwd_err:.2e}", f"{r.bwd_err:.2e}", f"{r.bound:.2e}", r.status)
            for r in rows]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)
