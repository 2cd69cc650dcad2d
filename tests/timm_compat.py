"""timm in the test suite: `fastwin.timm_compat` (placeholders for a missing torchvision), plus a skip.

    from timm_compat import import_timm, require_timm
    timm = require_timm()         # the module, or pytest.skip
"""
from __future__ import annotations

import types

from fastwin.timm_compat import import_timm, placeholders

__all__ = ["import_timm", "placeholders", "require_timm"]


def require_timm() -> types.ModuleType:
    """timm, or skip the calling test."""
    import pytest

    timm = import_timm()
    if timm is None:
        pytest.skip("timm is not installed (or does not import here)")
    return timm
