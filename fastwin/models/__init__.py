"""Reference model classes, one family per file; importing this registers every entry point."""
from . import deit, swin, swin_v2, uniformer, vit, vit_hybrid  # noqa: F401  (registers entry points)
from .checkpoint import load_checkpoint
from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "load_checkpoint", "register_model"]
