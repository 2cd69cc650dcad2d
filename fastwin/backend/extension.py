"""Loading of the compiled extension `fastwin._C` (ops `torch.ops.fastwin_C.*`).

`load_cpu()` imports the prebuilt module (built by setup.py). `load_cuda()` additionally makes sure
CUDA kernels are registered: if the prebuilt module has none (CPU-only build, or no build at all),
it JIT-compiles the sources in `csrc/` with `torch.utils.cpp_extension.load` (ninja) into
`$FASTWIN_CACHE_DIR` (default `~/.cache/fastwin`) once, and remembers a failure as the reason the
`cuda` backend is unavailable. Both return None on success, else a sentence saying why not.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import warnings
from typing import Optional

import torch

_CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "csrc")
_state = {}


def _has_kernel(op: str, key: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"fastwin_C::{op}", key)
    except RuntimeError:  # the schema is not registered at all
        return False


def load_cpu() -> Optional[str]:
    """Import fastwin._C and register its ops' Python side; None on success, else why it is unusable."""
    if "cpu" not in _state:
        if importlib.util.find_spec("fastwin._C") is None:
            _state["cpu"] = "fastwin._C was not built (pip install --no-build-isolation -e .)"
            return _state["cpu"]
        try:
            from .. import _C  # noqa: F401
        except ImportError as exc:
            _state["cpu"] = f"fastwin._C failed to load: {exc}"
            return _state["cpu"]
        _registered()
    return _state["cpu"]


def _registered() -> None:
    from . import cpp_ops

    cpp_ops.register()
    _state["cpu"] = None


def _toolkit():
    """csrc/cuda_toolkit.py (setup.py's toolkit lookup), loaded by path: csrc/ is not a package."""
    spec = importlib.util.spec_from_file_location("fastwin_cuda_toolkit", os.path.join(_CSRC, "cuda_toolkit.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _jit(name: str, sources, with_cuda: bool) -> None:
    from torch.utils import cpp_extension

    host = []
    toolkit = _toolkit()
    home = toolkit.find_toolkit() if with_cuda else None
    if home:  # torch's own guess is wrong behind a wrapper nvcc; the wheel headers fill the toolkit's gaps
        cpp_extension.CUDA_HOME = home
        host = toolkit.host_include_flags(home, os.path.dirname(torch.__file__))
    build_dir = os.path.join(os.environ.get("FASTWIN_CACHE_DIR", os.path.expanduser("~/.cache/fastwin")), name)
    os.makedirs(build_dir, exist_ok=True)
    omp = _openmp_flags()
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if not arch:
        major, minor = torch.cuda.get_device_capability()
        os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
    cpp_extension.load(
        name=name,
        sources=sources,
        extra_include_paths=[os.path.join(_CSRC, "include")],
        extra_cflags=["-O3", "-ffp-contract=fast"] + omp + host + (["-DFASTWIN_WITH_CUDA"] if with_cuda else []),
        extra_ldflags=omp,
        extra_cuda_cflags=["-O3", "-lineinfo"],
        build_directory=build_dir,
        is_python_module=False,
        verbose=False,
    )


def _openmp_flags():
    """The OpenMP flags csrc/build_config.py uses (there: why at::parallel_for needs them)."""
    import sys

    if not sys.platform.startswith("linux"):
        return []
    try:
        return ["-fopenmp"] if "OpenMP" in torch.__config__.parallel_info() else []
    except Exception:  # noqa: BLE001
        return ["-fopenmp"]


def load_cuda() -> Optional[str]:
    """Make the CUDA kernels available (JIT-building them if needed); None on success, else why not."""
    if "cuda" in _state:
        return _state["cuda"]
    if not torch.cuda.is_available():
        _state["cuda"] = "no CUDA device (torch.cuda.is_available() is False)"
        return _state["cuda"]
    prebuilt = load_cpu() is None
    if prebuilt and _has_kernel("shifted_window_attention_fwd", "CUDA"):
        _state["cuda"] = None
        return None
    cu = sorted(glob.glob(os.path.join(_CSRC, "cuda", "*.cu")))
    if not cu:
        _state["cuda"] = "fastwin._C has no CUDA kernels and the csrc/ sources are not available to JIT-build them"
        return _state["cuda"]
    # With a prebuilt CPU module the schemas exist: build only the CUDA kernels; else build everything.
    sources = cu + sorted(glob.glob(os.path.join(_CSRC, "cuda", "*.cpp")))
    if not prebuilt:
        sources += sorted(p for p in glob.glob(os.path.join(_CSRC, "**", "*.cpp"), recursive=True) if p not in sources)
    try:
        _jit("fastwin_cuda_kernels" if prebuilt else "fastwin_C_full", sources, with_cuda=True)
        registered = _has_kernel("shifted_window_attention_fwd", "CUDA")
        _state["cuda"] = None if registered else "JIT build registered no CUDA kernels"
        if not prebuilt:
            _registered()
    except Exception as exc:  # compiler missing, build error: fall back with one clear warning
        _state["cuda"] = f"JIT build of the CUDA kernels failed: {type(exc).__name__}: {str(exc)[-500:]}"
        warnings.warn(f"fastwin: {_state['cuda']}; the cuda backend is disabled", RuntimeWarning, stacklevel=2)
    return _state["cuda"]
