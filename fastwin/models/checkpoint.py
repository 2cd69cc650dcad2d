"""Strict checkpoint loading with per-family key filters (official and timm layouts).

A family registers `filter_fn(state_dict, model) -> state_dict` for its model class with
`@checkpoint_filter(ModelClass)`; the filter converts foreign layouts (timm Swin, official UniFormer
...) to fastwin's names. Everything else is strict: a key that is missing, unexpected or of the
wrong shape, or an entry that cannot be copied into the model as it is (meta, sparse or quantized
tensors, complex or integer values for real floats and the reverse), fails the whole load with the
list of offending keys, before any parameter changes. Float widths may differ (an fp16 checkpoint
loads into an fp32 model), as with `load_state_dict`.
"""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional

import torch

DERIVED_BUFFERS = ("relative_position_index", "attn_mask", "relative_coords_table")
_FILTERS: Dict[type, Callable] = {}


def checkpoint_filter(model_cls: type):
    """Decorator registering a state-dict filter for `model_cls` (and its subclasses)."""

    def wrap(fn):
        _FILTERS[model_cls] = fn
        return fn

    return wrap


def _read(path_or_state_dict) -> Mapping[str, torch.Tensor]:
    obj = path_or_state_dict
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except EOFError as exc:  # torch.load's own message is empty
            size = os.path.getsize(path) if os.path.exists(path) else 0
            raise ValueError(f"checkpoint file {path!r} is empty or truncated ({size} bytes)") from exc
        except (RuntimeError, pickle.UnpicklingError) as exc:
            raise type(exc)(f"cannot read checkpoint file {path!r}: {exc}") from exc
    if not isinstance(obj, Mapping):
        raise TypeError(f"checkpoint must be a path or a state dict, got {type(obj).__name__}")
    for key in ("model", "state_dict", "model_state"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    sd = OrderedDict()
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"checkpoint entry {k!r} is a {type(v).__name__}, not a tensor")
        sd[k[7:] if k.startswith("module.") else k] = v  # DDP-wrapped saves
    return sd


def _kind(dtype: torch.dtype) -> str:
    return "complex" if dtype.is_complex else "floating-point" if dtype.is_floating_point else "integer"


def _copy_problem(v: torch.Tensor, target: torch.Tensor) -> Optional[str]:
    """Why checkpoint entry `v` cannot be copied into the model's `target` as is, or None."""
    if v.layout != torch.strided:
        return f"{v.layout} tensor (convert it with .to_dense())"
    if v.is_quantized:
        return f"quantized tensor ({v.dtype}; dequantize it)"
    if v.is_meta:
        return "on the meta device (it holds no values)"
    if _kind(v.dtype) != _kind(target.dtype):
        return f"{_kind(v.dtype)} values ({v.dtype}) for the model's {_kind(target.dtype)} tensor ({target.dtype})"
    if target.is_meta:
        return "the model's tensor is on the meta device (materialize the model first, e.g. model.to_empty(device=...))"
    return None


def _filter_for(model):
    for cls in type(model).__mro__:
        if cls in _FILTERS:
            return _FILTERS[cls]
    return None


def load_checkpoint(model: torch.nn.Module, path_or_state_dict) -> torch.nn.Module:
    """Load official, timm or fastwin weights into `model`, strictly.

    Args:
        model: a fastwin model (or any module; then only the generic rules apply).
        path_or_state_dict: a state dict, or a file holding one (possibly under `model`/`state_dict`).
    Raises:
        ValueError: missing, unexpected or mis-shaped keys, or entries that cannot be copied (meta,
            sparse or quantized tensors; complex or integer values for float tensors and the reverse),
            all listed by key; an empty or truncated file. The model is left unchanged: every entry
            is checked before the first one is copied.
    Returns:
        the model.
    """
    sd = _read(path_or_state_dict)
    sd = OrderedDict((k, v) for k, v in sd.items() if k.rsplit(".", 1)[-1] not in DERIVED_BUFFERS)
    fn = _filter_for(model)
    if fn is not None:
        sd = fn(sd, model)
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    problems = ((k, _copy_problem(sd[k], v)) for k, v in expected.items() if k in sd)
    uncopyable: List[str] = [f"{k}: {why}" for k, why in problems if why is not None]
    if missing or unexpected or wrong or uncopyable:
        parts = []
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong),
                            ("entries that cannot be copied", uncopyable)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
                parts.append(f"{title}: {shown}")
        raise ValueError(f"checkpoint does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)
    return model
