"""The SPEC §6 tolerance rule, shared by every backend test.

A fast path's error against a high-precision reference may be at most 2x the error of the reference
computed in the same low precision, plus a small absolute floor.
"""
import torch

ABS_FLOOR = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def assert_within_rule(fast: torch.Tensor, ref_lowp: torch.Tensor, ref_exact: torch.Tensor, name: str = "output",
                       dtype: torch.dtype = None, factor: float = 2.0):
    """fast vs exact error <= factor * (ref_lowp vs exact error) + floor(dtype)."""
    assert fast.shape == ref_exact.shape, f"{name}: shape {tuple(fast.shape)} != {tuple(ref_exact.shape)}"
    assert torch.isfinite(fast).all(), f"{name}: non-finite values"
    dtype = dtype or fast.dtype
    scale = max(ref_exact.double().abs().max().item(), 1.0)
    bound = factor * max_err(ref_lowp, ref_exact) + ABS_FLOOR[dtype] * scale
    err = max_err(fast, ref_exact)
    assert err <= bound, f"{name}: max error {err:.3e} > bound {bound:.3e} ({dtype})"
