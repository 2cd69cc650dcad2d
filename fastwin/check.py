"""`fastwin check`: every available backend against the reference on this machine.

Runs the quick part of the shared conformance table (`fastwin.testing`), for every dtype the device
supports, each backend strictly (no silent fallback), forward and backward, with the SPEC §6 rule.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional

import torch

from . import dispatch, testing


@dataclasses.dataclass
class CheckRow:
    backend: str
    case: str
    dtype: str
    fwd_err: float = float("nan")
    bwd_err: float = float("nan")
    bound: float = float("nan")
    status: str = "ok"  # ok | MISMATCH: ... | skipped: reason | error: ...

    @property
    def failed(self) -> bool:
        return self.status.startswith(("MISMATCH", "error"))


def device_dtypes(device: torch.device) -> List[torch.dtype]:
    return testing.device_dtypes(device)


def count_checks(device: torch.device, backends: List[str]) -> int:
    return len(testing.select_cases(quick=True)) * len(device_dtypes(device)) * len(backends)


def _row(case, name: str, dtype: torch.dtype, device) -> CheckRow:
    row = CheckRow(name, f"{case.op}: {case.name}", str(dtype)[6:])
    reason = testing.supported(case, name, device, dtype)
    if reason is not None:
        row.status = f"skipped: {reason}"
        return row
    try:
        res = testing.run_case(case, name, dtype, device)
    except Exception as exc:  # a crash is a failure to report, not a reason to stop checking
        row.status = f"error: {type(exc).__name__}: {exc}"[:120]
        return row
    (row.fwd_err, fwd_bound), (row.bwd_err, bwd_bound) = res.worst("output"), res.worst("grad")
    row.bound = max(b for b in (fwd_bound, bwd_bound) if b == b)  # NaN-free (cases without grads)
    if not res.ok:
        row.status = "MISMATCH: " + "; ".join(res.failures)
    return row


def run_checks(device: torch.device, backends: Optional[List[str]] = None,
               progress: Optional[Callable[[str], None]] = None) -> List[CheckRow]:
    table = dispatch.backends()
    names = backends or [n for n in dispatch.BACKENDS if table[n]]
    rows = []
    for case in testing.select_cases(quick=True):
        for dtype in device_dtypes(device):
            for name in names:
                rows.append(_row(case, name, dtype, device))
                if progress:
                    progress(f"{name} {case.name} {rows[-1].dtype}")
    return rows


def format_rows(rows: List[CheckRow]) -> str:
    head = ("backend", "case", "dtype", "fwd err", "bwd err", "bound", "status")
    body = [(r.backend, r.case, r.dtype, f"{r.fwd_err:.2e}", f"{r.bwd_err:.2e}", f"{r.bound:.2e}", r.status)
            for r in rows]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)
