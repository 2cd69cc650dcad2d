"""`autotune`: `triton.autotune` whose benchmarking is skipped under the CPU interpreter or when switched off.

Every fastwin prune keeps exactly one config under TRITON_INTERPRET=1. Triton >= 3.7 then runs it
without timing, but triton 3.6 (the GPU image's version) times even a single survivor, and timing
needs a GPU driver: the interpreter would fail with "0 active drivers". Here the interpreter's
timing is a constant instead; on a GPU the driver's own benchmarker runs as usual.

FASTWIN_TRITON_AUTOTUNE=0 keeps only the first config each prune allows per autotune key (and skips
its timing): correctness runs on a GPU then compile one kernel per key instead of every candidate
(~1,500 compiles for the conformance suite otherwise). Timings need the default (autotuning on).
"""
from __future__ import annotations

import functools
import os

import triton
from triton.runtime import driver

from . import interpreting

AUTOTUNE_ENV = "FASTWIN_TRITON_AUTOTUNE"


def autotuning() -> bool:
    """False when FASTWIN_TRITON_AUTOTUNE=0 (read at every call, so tests and runs can switch it)."""
    return os.environ.get(AUTOTUNE_ENV, "1") != "0"


def _bench(kernel_call, quantiles):
    if interpreting() or not autotuning():
        return [0.0] * len(quantiles)  # one config survives the prune: nothing to compare
    return driver.active.get_benchmarker()(kernel_call, quantiles=quantiles)


def first_config_unless_autotuning(early_config_prune):
    """`early_config_prune` that keeps only its first surviving config when autotuning is off."""

    @functools.wraps(early_config_prune)
    def prune(configs, named_args, **kwargs):
        kept = early_config_prune(configs, named_args, **kwargs)
        return list(kept) if autotuning() else list(kept)[:1]

    return prune


def autotune(configs, key, early_config_prune):
    """`triton.autotune(configs, key, prune_configs_by={"early_config_prune": ...})`, interpreter-safe."""
    prune = first_config_unless_autotuning(early_config_prune)
    return triton.autotune(configs=configs, key=key, prune_configs_by={"early_config_prune": prune},
                           do_bench=_bench)
