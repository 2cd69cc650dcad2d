"""Model registry: `register_model`, `create_model`, `list_models` (timm-style names)."""
from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Dict, List

_MODELS: Dict[str, Callable] = {}


def register_model(fn: Callable) -> Callable:
    """Decorator: register an entry point under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> List[str]:
    """Sorted names of registered models matching a glob `pattern`."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, checkpoint=None, **kwargs):
    """Build model `name`; `checkpoint` (path or state dict) is loaded strictly with `load_checkpoint`.

    Keyword arguments override the entry point's defaults (num_classes, img_size, drop_path_rate ...).
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (see fastwin.list_models())")
    model = _MODELS[name](**kwargs)
    if checkpoint is not None:
        from .checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint)
    return model
