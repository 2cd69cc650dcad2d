"""Backend selection: the only place in fastwin that branches on backends (SPEC §4).

A backend is a module in `fastwin.backend` with
    NAME: str
    available() -> Optional[str]          None when usable on this machine, else why not
    supports(call: Call) -> Optional[str] None when it handles this call, else why not
    IMPLS: dict[op name, callable]        same signature as the `fastwin.reference` function

`auto` walks a per-device priority list and takes the first backend that is available and supports
the call; the reference supports everything, so a valid input never fails. An explicitly chosen
backend that cannot take a call falls back to the reference with one warning per reason, or raises
when the backend was set with `strict=True` (tests use that, so they never test the fallback by mistake).
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import warnings
from typing import Callable, Dict, Optional, Tuple

import torch

log = logging.getLogger("fastwin.dispatch")

BACKENDS = ("reference", "triton", "cuda", "cpp")
CHOICES = ("auto",) + BACKENDS
OPS = ("window_attention", "shifted_window_attention", "attention", "dwconv2d", "dwconv_layernorm")

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


@dataclasses.dataclass(frozen=True)
class Call:
    """What a backend needs to know to accept or refuse one op call."""

    op: str
    device: torch.device
    dtype: torch.dtype
    requires_grad: bool
    params: Tuple[Tuple[str, object], ...] = ()

    def param(self, name, default=None):
        return dict(self.params).get(name, default)


class _State:
    """The process-wide backend choice (a plain object so torch.compile can guard on it)."""

    def __init__(self):
        self.backend = "auto"
        self.strict = False
        self.modules: Dict[str, object] = {}
        self.unavailable: Dict[str, Optional[str]] = {}
        self.warned = set()


_state = _State()


def _module(name: str):
    if name not in _state.modules:
        _state.modules[name] = importlib.import_module(f"fastwin.backend.{name}_backend")
    return _state.modules[name]


def unavailable_reason(name: str) -> Optional[str]:
    """None if backend `name` works on this machine, else a sentence saying why not (cached)."""
    if name not in _state.unavailable:
        try:
            reason = _module(name).available()
        except Exception as exc:  # a broken optional dependency must not break fastwin
            reason = f"failed to import: {type(exc).__name__}: {exc}"
        _state.unavailable[name] = reason
    return _state.unavailable[name]


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


def get_backend() -> str:
    """The current choice: "auto" or a backend name."""
    return _state.backend


class set_backend:
    """Choose the backend for all fastwin ops; also a context manager that restores the previous one.

    Args:
        name: "auto", "reference", "triton", "cuda" or "cpp".
        strict: raise instead of falling back to the reference when the backend cannot take a call.

    Raises:
        ValueError: unknown name. RuntimeError: the backend is unavailable here (with the reason).
    """

    def __init__(self, name: str, strict: bool = False):
        if not isinstance(name, str) or name not in CHOICES:
            raise ValueError(f"backend must be one of {CHOICES}, got {name!r}")
        if name != "auto":
            reason = unavailable_reason(name)
            if reason is not None:
                raise RuntimeError(f"fastwin backend {name!r} is unavailable: {reason}")
        self._prev = (_state.backend, _state.strict)
        _state.backend, _state.strict = name, bool(strict)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _state.backend, _state.strict = self._prev
        return False


def why_not(name: str, call: Call) -> Optional[str]:
    """None if backend `name` is available and takes `call`, else the reason it does not."""
    reason = unavailable_reason(name)
    if reason is None:
        mod = _module(name)
        reason = mod.supports(call) if call.op in mod.IMPLS else f"does not implement {call.op}"
    return reason


def select(call: Call) -> Tuple[str, Callable]:
    """Pick the backend for `call` and return `(name, implementation)`."""
    choice = _state.backend
    if choice == "auto":
        for name in auto_order(call.device.type, call.op):
            reason = why_not(name, call)
            if reason is None:
                return name, _module(name).IMPLS[call.op]
            log.debug("auto: %s skipped for %s: %s", name, call.op, reason)
        return "reference", _module("reference").IMPLS[call.op]
    reason = why_not(choice, call)
    if reason is None:
        return choice, _module(choice).IMPLS[call.op]
    message = f"fastwin backend {choice!r} cannot run {call.op} here ({reason})"
    if _state.strict:
        raise RuntimeError(message)
    if (choice, call.op, reason) not in _state.warned:
        _state.warned.add((choice, call.op, reason))
        warnings.warn(message + "; using the reference implementation", RuntimeWarning, stacklevel=3)
    return "reference", _module("reference").IMPLS[call.op]


def _env_default():
    name = os.environ.get("FASTWIN_BACKEND", "").strip().lower()
    if not name:
        return
    if name not in CHOICES:
        warnings.warn(f"FASTWIN_BACKEND={name!r} is not one of {CHOICES}; using 'auto'", RuntimeWarning)
        return
    try:
        set_backend(name)
    except RuntimeError as exc:
        warnings.warn(f"FASTWIN_BACKEND: {exc}; using 'auto'", RuntimeWarning)


_env_default()
