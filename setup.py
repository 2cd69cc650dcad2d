"""Builds fastwin and, where possible, its C++/CUDA extension `fastwin._C`.

The extension is optional: if torch's C++ toolchain or the CUDA compiler is missing, or the build
fails, fastwin installs without it and the `cpp`/`cuda` backends report why they are unavailable.

Environment switches:
    FASTWIN_SKIP_EXT=1      do not build fastwin._C at all
    FASTWIN_SKIP_CUDA=1     build only the CPU kernels even where CUDA is available
    FASTWIN_REQUIRE_CUDA=1  the CUDA part must build: any reason it cannot, or any compile error, fails
                            the install (non-zero exit) instead of warning
    TORCH_CUDA_ARCH_LIST    CUDA archs to build for (default: the visible GPUs' archs, else "8.0;9.0")
    CUDA_HOME               the CUDA toolkit (default: found behind nvcc, see csrc/cuda_toolkit.py)
    MAX_JOBS                parallel compile jobs (default: sized to cores and memory)
"""
import os
import sys

from setuptools import setup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc"))
from build_config import extension_kwargs  # noqa: E402

setup(**extension_kwargs())
