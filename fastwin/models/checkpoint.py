"""Strict checkpoint loading with per-family key filters (official and timm layouts).

A family registers `filter_fn(state_dict, model) -> state_dict` for its model class with
`@checkpoint_filter(ModelClass)`; the filter converts foreign layouts (timm Swin, official UniFormer
...) to fastwin's names. Everything else is strict: a key that is missing, unexpected or of the
wrong shape fails the whole load, with the list of offending keys, before any parameter changes.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable, Dict, Mapping

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
        obj = torch.load(obj, map_location="cpu", weights_only=True)
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
        ValueError: missing, unexpected or mis-shaped keys (all listed); the model is left unchanged.
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
    if missing or unexpected or wrong:
        parts = []
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
                parts.append(f"{title}: {shown}")
        raise ValueError(f"checkpoint does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)
    return model
