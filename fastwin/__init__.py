"""fastwin: fused Triton / CUDA kernels for Swin, UniFormer and ViT, behind drop-in PyTorch modules."""
from . import (
    backend,  # noqa: F401  (registers the compiled ops: schema, fake, autograd)
    ops,
    swap,  # noqa: E402  (a callable module: fastwin.swap(model))
)
from .dispatch import backends, get_backend, set_backend, set_default_backend
from .layers import SwinTransformerBlock, WindowAttention
from .models import create_model, list_models, load_checkpoint
from .version import __version__

__all__ = [
    "__version__",
    "backends",
    "create_model",
    "get_backend",
    "list_models",
    "load_checkpoint",
    "ops",
    "set_backend",
    "set_default_backend",
    "swap",
    "SwinTransformerBlock",
    "WindowAttention",
]
