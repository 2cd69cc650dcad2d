"""Backend selection: the only place in fastwin that branches on backends (SPEC §4).

A backend is a module in `fastwin.backend` with
    NAME: str
    available() -> Optional[str]          None when usable on this machine, else why not (a query)
    supports(call: Call) -> Optional[str] None when it handles this call, else why not
    IMPLS: dict[op name, callable]        same signature as the `fastwin.reference` function

Every op call is described by a typed, hashable `Call` (`WindowAttentionCall`, `AttentionCall`,
`ConvCall`, `LinearCall`; the op's row in `fastwin.contract` names its type). The backend that runs it is, in order: the op's `backend=` argument (modules pass
theirs), else this thread's `set_backend` choice, else the process default (`FASTWIN_BACKEND` or
`set_default_backend`). `auto` walks a per-device priority list and takes the first backend that is
available and supports the call; the reference supports everything, so a valid input never fails.
A named backend that cannot take a call falls back to the reference with one warning per reason, or
raises when chosen with `strict=True` (tests use that, so they never test the fallback by mistake).
While a model is being exported (`torch.onnx`, `torch.export`) every op runs the reference, whose
plain torch ops every exporter understands.

The choice is thread-local (a `threading.local`, which torch.compile guards on like any attribute).
Threads that never call `set_backend` (e.g. autograd's CUDA worker threads recomputing checkpointed
blocks) use the process default; `bind(fn)` carries the caller's choice into such a call.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch

from . import contract
from .backend import cpp_backend, cuda_backend, reference_backend, triton_backend
from .contract import AttentionCall, Call, ConvCall, LinearCall, WindowAttentionCall  # noqa: F401 (re-exports)

log = logging.getLogger("fastwin.dispatch")

BACKENDS = ("reference", "triton", "cuda", "cpp")
CHOICES = ("auto",) + BACKENDS
OPS = tuple(contract.OPS)

# Order `auto` tries per device type, optionally per (device type, op). Kept in one table so a
# measurement changes one line. CPU: the cpp attention kernels measured 2.5-10x faster than the
# reference per Swin-T stage (Swin-T inference 1.56-1.61x), but the cpp depthwise conv is slower than
# oneDNN's, so dwconv ops prefer the reference there. CUDA: not yet measured on a GPU; Triton first
# because it is the most tested fused path.
AUTO_ORDER = {
    "cuda": ("triton", "cuda", "reference"),
    "cpu": ("cpp", "reference"),
    ("cpu", "dwconv2d"): ("reference", "cpp"),
    ("cpu", "dwconv_layernorm"): ("reference", "cpp"),
}


def auto_order(device_type: str, op: str) -> Tuple[str, ...]:
    """The backends `auto` tries, in order, for `op` on `device_type`."""
    return AUTO_ORDER.get((device_type, op)) or AUTO_ORDER.get(device_type, ("reference",))


# Call descriptors (`WindowAttentionCall`, `AttentionCall`, `ConvCall`, `LinearCall`) are defined with
# the ops in `fastwin.contract`; they are re-exported here, where backends read them.


# ------------------------------------------------------------------------------------------- choice state

class _Default:
    """The process-wide default choice (FASTWIN_BACKEND, `set_default_backend`)."""

    backend = "auto"
    strict = False


class _ThreadChoice(threading.local):
    def __init__(self):
        self.backend: Optional[str] = None  # None: use the process default
        self.strict = False
        self.recorder: Optional[List[Tuple[str, str]]] = None


_default = _Default()
_tls = _ThreadChoice()
_modules: Dict[str, object] = {m.NAME: m for m in (reference_backend, triton_backend, cuda_backend, cpp_backend)}
_unavailable: Dict[str, Optional[str]] = {}
_warned: set = set()
_chosen: Dict[tuple, Tuple[str, Callable]] = {}  # memo of (choice, strict, call) -> backend; pure function


def _module(name: str):
    return _modules[name]


@torch.compiler.assume_constant_result  # traced code takes the answer as a constant (it is one per process)
def unavailable_reason(name: str) -> Optional[str]:
    """None if backend `name` works on this machine, else a sentence saying why not (cached)."""
    if name not in _unavailable:
        try:
            reason = _module(name).available()
        except Exception as exc:  # a broken optional dependency must not break fastwin
            reason = f"failed to import: {type(exc).__name__}: {exc}"
        _unavailable[name] = reason
    return _unavailable[name]


class BackendTable(dict):
    """`{name: bool}` for every backend, with `.reasons[name]` saying why one is unavailable."""

    def __init__(self, flags, reasons):
        super().__init__(flags)
        self.reasons = reasons

    def __repr__(self):
        rows = [f"{k}: {'yes' if v else 'no (' + self.reasons[k] + ')'}" for k, v in self.items()]
        return "{" + ", ".join(rows) + "}"


def backends() -> BackendTable:
    """Which backends work here: `{"reference": True, "triton": bool, "cuda": bool, "cpp": bool}`.

    The returned dict has a `.reasons` attribute mapping each unavailable backend to why.
    """
    reasons = {name: unavailable_reason(name) for name in BACKENDS}
    return BackendTable({k: v is None for k, v in reasons.items()}, {k: v for k, v in reasons.items() if v})


def _check_choice(name: str) -> str:
    if not isinstance(name, str) or name not in CHOICES:
        raise ValueError(f"backend must be one of {CHOICES}, got {name!r}")
    if name != "auto":
        reason = unavailable_reason(name)
        if reason is not None:
            raise RuntimeError(f"fastwin backend {name!r} is unavailable: {reason}")
    return name


def get_backend() -> str:
    """This thread's choice: "auto" or a backend name."""
    return _default.backend if _tls.backend is None else _tls.backend


def _strict() -> bool:
    return _default.strict if _tls.backend is None else _tls.strict


class set_backend:
    """Choose the backend for fastwin ops in this thread; also a context manager that restores the
    previous choice.

    Args:
        name: "auto", "reference", "triton", "cuda" or "cpp".
        strict: raise instead of falling back to the reference when the backend cannot take a call.

    Raises:
        ValueError: unknown name. RuntimeError: the backend is unavailable here (with the reason).

    Other threads are unaffected; they use the process default (`set_default_backend`,
    `FASTWIN_BACKEND`). Ops and modules also take `backend=` for a single call or module.
    """

    def __init__(self, name: str, strict: bool = False):
        _check_choice(name)
        self._prev = (_tls.backend, _tls.strict)
        _tls.backend, _tls.strict = name, bool(strict)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _tls.backend, _tls.strict = self._prev
        return False


def set_default_backend(name: str, strict: bool = False) -> None:
    """The process-wide default every thread uses until it calls `set_backend` (like FASTWIN_BACKEND)."""
    _default.backend, _default.strict = _check_choice(name), bool(strict)


def bind(fn: Callable) -> Callable:
    """`fn` that runs with this thread's current backend choice in whatever thread calls it.

    For work that autograd may replay in its own threads, such as checkpointed blocks on CUDA.
    """
    choice, strict = get_backend(), _strict()

    @functools.wraps(fn)
    def bound(*args, **kwargs):
        with set_backend(choice, strict):
            return fn(*args, **kwargs)

    return bound


@contextlib.contextmanager
def record():
    """Collect `(op, backend)` for every fastwin op this thread runs inside the block (tests, `fastwin check`)."""
    prev = _tls.recorder
    _tls.recorder = calls = []
    try:
        yield calls
    finally:
        _tls.recorder = prev


def note(*ran: Tuple[str, str]) -> None:
    """Add `(op, backend)` entries to the active `record()`: ops that a layer's inference-only form ran
    itself, after asking `select` once for the whole layer (e.g. UniFormer's blocks)."""
    if _tls.recorder is not None:
        _tls.recorder.extend(ran)


# ---------------------------------------------------------------------------------------------- selection

def why_not(name: str, call: Call) -> Optional[str]:
    """None if backend `name` is available and takes `call`, else the reason it does not."""
    reason = unavailable_reason(name)
    if reason is None:
        mod = _module(name)
        reason = mod.supports(call) if call.op in mod.IMPLS else f"does not implement {call.op}"
    return reason


def _reference(call: Call) -> Tuple[str, Callable]:
    return "reference", _module("reference").IMPLS[call.op]


def _select(call: Call, choice: str, strict: bool) -> Tuple[str, Callable]:
    if choice == "auto":
        for name in auto_order(call.device_type, call.op):
            reason = why_not(name, call)
            if reason is None:
                return name, _module(name).IMPLS[call.op]
            log.debug("auto: %s skipped for %s: %s", name, call.op, reason)
        return _reference(call)
    reason = why_not(choice, call)
    if reason is None:
        return choice, _module(choice).IMPLS[call.op]
    message = f"fastwin backend {choice!r} cannot run {call.op} here ({reason})"
    if strict:
        raise RuntimeError(message)
    if (choice, call.op, reason) not in _warned:
        _warned.add((choice, call.op, reason))
        warnings.warn(message + "; using the reference implementation", RuntimeWarning, stacklevel=4)
    return _reference(call)


def _onnx_export_probe() -> Callable[[], bool]:
    """`torch.onnx.is_in_onnx_export` without its per-call imports (~1 us of an op's ~5 us overhead)."""
    try:
        from torch.onnx._internal.exporter import _flags
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

        return lambda: GLOBALS.in_onnx_export or _flags._is_onnx_exporting
    except (ImportError, AttributeError):  # another torch layout: the public query
        return torch.onnx.is_in_onnx_export


_in_onnx_export = _onnx_export_probe()


def _exporting() -> bool:
    return _in_onnx_export() or torch.compiler.is_exporting()


def selection_state() -> Tuple[str, bool, bool]:
    """Everything besides the call that `select` (without `backend=`) depends on: this thread's choice,
    its strictness, and whether a model is being exported. A layer that keeps the answer of `select`
    (`fastwin.layers.inference_plan`) asks again when this changed."""
    return get_backend(), _strict(), _exporting()


def select(call: Call, backend: Optional[str] = None) -> Tuple[str, Callable]:
    """`(backend name, implementation)` for `call`; `backend` overrides this thread's choice."""
    if backend is None:
        choice, strict = get_backend(), _strict()
    else:
        choice, strict = _check_choice(backend), _strict()
    if torch.compiler.is_compiling():  # traced once per guard set: public queries, no memo state
        if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
            return _reference(call)
        return _select(call, choice, strict)
    if _exporting():
        return _reference(call)
    key = (choice, strict, call)
    hit = _chosen.get(key)
    if hit is None:
        hit = _chosen[key] = _select(call, choice, strict)
    return hit


def run(call: Call, backend: Optional[str], *args):
    """Run `call` on the selected backend with the reference signature's `args`."""
    name, impl = select(call, backend)
    if _tls.recorder is not None:
        _tls.recorder.append((call.op, name))
    return impl(*args)


def _env_default():
    name = os.environ.get("FASTWIN_BACKEND", "").strip().lower()
    if not name:
        return
    if name not in CHOICES:
        warnings.warn(f"FASTWIN_BACKEND={name!r} is not one of {CHOICES}; using 'auto'", RuntimeWarning, stacklevel=2)
        return
    try:
        set_default_backend(name)
    except RuntimeError as exc:
        warnings.warn(f"FASTWIN_BACKEND: {exc}; using 'auto'", RuntimeWarning, stacklevel=2)


_env_default()
