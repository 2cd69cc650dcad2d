"""Argument validation shared by the functional ops (SPEC §7).

Every check runs in Python before any kernel launch and raises `ValueError` (bad shape or value) or
`TypeError` (bad type, dtype or device) naming the argument, what was expected and what was given.
"""
from __future__ import annotations

import math
import weakref
from typing import Optional, Sequence, Tuple

import torch
from torch._subclasses.fake_tensor import is_fake

from ..utils import fx_proxy
from ..utils import pair  # noqa: F401  (re-exported: checks.pair is used by the ops)

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def tensor(name: str, t, ndim: Optional[int] = None, layout_hint: str = "") -> torch.Tensor:
    if fx_proxy(t):
        raise TypeError(f"{name} is a torch.fx Proxy: under symbolic tracing call the op as fastwin.ops.<op>(...) "
                        "(torch.fx.wrap'ped, a leaf of the graph), not through a name imported from fastwin.ops")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        hint = f" {layout_hint}" if layout_hint else ""
        raise ValueError(f"{name} must have {ndim} dims{hint}, got shape {tuple(t.shape)}")
    return t


def optional_like(name: str, t, ref: torch.Tensor, ref_name: str, shape: Sequence[int]) -> Optional[torch.Tensor]:
    """Check an optional companion tensor: shape, device and dtype equal to `ref`'s."""
    if t is None:
        return None
    tensor(name, t)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    same_device(name, t, ref_name, ref)
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}; cast one of them")
    return t


def same_device(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise TypeError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def scale(v, head_dim: int, dtype: Optional[torch.dtype] = None) -> float:
    """The logit scale (default head_dim ** -0.5); refuses values that make every logit NaN/inf."""
    if head_dim <= 0:
        raise ValueError(f"head_dim must be positive (qkv's last dim 3 * num_heads * head_dim), got {head_dim}")
    if v is None:
        return head_dim ** -0.5
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"scale must be a float or None, got {type(v).__name__}")
    # Comparisons, not math.isfinite: torch.compile(dynamic=True) traces module floats symbolically.
    if v != v or abs(v) == math.inf:
        raise ValueError(f"scale must be finite (it would turn every logit into NaN/inf), got {v}")
    if dtype is not None and dtype.is_floating_point and abs(v) > torch.finfo(dtype).max:
        raise ValueError(f"scale {v} overflows {dtype} (max {torch.finfo(dtype).max:.3g}): every logit would be "
                         "inf/NaN")
    return float(v)


def dropout(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"dropout_p must be a float in [0, 1), got {p!r}")
    return float(p)


def heads_and_dim(name: str, channels3: int, num_heads: int, shape) -> int:
    """Head dim from the packed qkv channel count `3 * heads * d`."""
    positive_int("num_heads", num_heads)
    if channels3 == 0:
        raise ValueError(f"{name} last dim must be 3 * num_heads * head_dim with head_dim >= 1, got 0 "
                         f"(shape {tuple(shape)})")
    if channels3 % (3 * num_heads):
        raise ValueError(
            f"{name} last dim must be 3 * num_heads * head_dim; {channels3} is not divisible by "
            f"3 * num_heads = {3 * num_heads} (shape {tuple(shape)})"
        )
    return channels3 // (3 * num_heads)


def bias_table(t, qkv: torch.Tensor, window: Tuple[int, int], num_heads: int):
    shape = ((2 * window[0] - 1) * (2 * window[1] - 1), num_heads)
    return optional_like("rel_pos_bias_table", t, qkv, "qkv", shape)


def finite_float(name: str, v, positive: bool = False) -> float:
    """A finite (optionally > 0) Python number, e.g. a LayerNorm `eps`: inf / NaN would give NaN outputs."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(v).__name__}")
    # Comparisons, not math.isfinite: torch.compile(dynamic=True) traces module floats symbolically.
    if v != v or abs(v) == math.inf or (positive and not v > 0):
        kind = "a positive finite float" if positive else "a finite float"
        raise ValueError(f"{name} must be {kind}, got {v!r}")
    return float(v)


# Tensors whose values are known finite without reading them: derived by `vouch_finite` from a
# parameter already checked at its current version. id -> tensor (weak: no tensor kept alive).
_VOUCHED: "weakref.WeakValueDictionary[int, torch.Tensor]" = weakref.WeakValueDictionary()


def _values_unreadable(t: torch.Tensor) -> bool:
    """True where a tensor's values cannot be read without breaking the caller: torch.compile / export
    tracing (a graph break), torch.fx proxies, meta and fake tensors, CUDA graph capture."""
    if torch.compiler.is_compiling() or isinstance(t, torch.fx.Proxy) or t.is_meta or is_fake(t):
        return True
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def _plain(t: torch.Tensor) -> torch.Tensor:
    """The tensor under torch.func's wrappers (a vmap batch cannot be bool()-ed or listed): all its values."""
    t = t.detach()
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def finite_tensor(name: str, t: torch.Tensor, why: str, allow_inf: bool = False) -> None:
    """ValueError if `t` holds inf or NaN (SPEC §7: NaN-producing inputs are refused before any kernel).

    Reading the values costs a device sync on CUDA. It is skipped where values cannot be read (see
    `_values_unreadable`: compiled graphs and CUDA graphs stay sync- and break-free) and for tensors a
    module vouched for (`vouch_finite`), so a model pays one sync per parameter update, not per call.
    """
    if _VOUCHED.get(id(t)) is t or _values_unreadable(t):
        return
    values = _plain(t)
    bad = values.isnan().any() if allow_inf else ~torch.isfinite(values).all()
    if bool(bad):
        kind = "free of NaN" if allow_inf else "finite"
        raise ValueError(f"{name} must be {kind} ({why}), got {values.flatten().tolist()[:8]}")


def vouch_finite(name: str, param: torch.Tensor, derived: torch.Tensor, why: str) -> torch.Tensor:
    """Check `param` for NaN once per value (its version counter and storage), and mark `derived` (a
    function of it that is finite whenever `param` has no NaN, e.g. exp(clamp(p, max=...))) so that
    `finite_tensor` does not read it again.

    Returns `derived`.
    """
    if _values_unreadable(param) or _values_unreadable(derived):
        return derived
    if torch._C._functorch.is_functorch_wrapped_tensor(param):  # no storage to key on: the op checks `derived`
        return derived
    key = (param._version, param.data_ptr())
    if getattr(param, "_fastwin_finite_at", None) != key:
        finite_tensor(name, param, why, allow_inf=True)
        param._fastwin_finite_at = key
    _VOUCHED[id(derived)] = derived
    return derived
