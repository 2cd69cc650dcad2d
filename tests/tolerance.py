"""The SPEC §6 tolerance rule as a test assertion, shared by every backend test.

A fast path's error against a high-precision reference may be at most 2x the error of the reference
computed in the same low precision, plus a small absolute floor (`fastwin.testing.FLOORS`, the one
table `fastwin check` and the conformance suite use too).
"""
import torch

from fastwin.testing import FLOORS, bound, max_err


def assert_within_rule(fast: torch.Tensor, ref_lowp: torch.Tensor, ref_exact: torch.Tensor, name: str = "output",
                       dtype: torch.dtype = None, factor: float = 2.0):
    """fast vs exact error <= factor * (ref_lowp vs exact error) + floor(dtype)."""
    assert fast.shape == ref_exact.shape, f"{name}: shape {tuple(fast.shape)} != {tuple(ref_exact.shape)}"
    assert torch.isfinite(fast).all(), f"{name}: non-finite values"
    dtype = dtype or fast.dtype
    limit = bound(ref_lowp, ref_exact, dtype, factor)
    err = max_err(fast, ref_exact)
    assert err <= limit, f"{name}: max error {err:.3e} > bound {limit:.3e} ({dtype}, floor {FLOORS[dtype]:.0e})"
