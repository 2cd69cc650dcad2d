"""`autotune`: `triton.autotune` whose benchmarking is skipped under the CPU interpreter.

Every fastwin prune keeps exactly one config under TRITON_INTERPRET=1. Triton >= 3.7 then runs it
without timing, but triton 3.6 (the GPU image's version) times even a single survivor, and timing
needs a GPU driver: the interpreter would fail with "0 active drivers". Here the interpreter's
timing is a constant instead; on a GPU the driver's own benchmarker runs as usual.
"""
from __future__ import annotations

import triton
from triton.runtime import driver

from . import interpreting


def _bench(kernel_call, quantiles):
    if interpreting():
        return [0.0] * len(quantiles)  # one config survives the prune: nothing to compare
    return driver.active.get_benchmarker()(kernel_call, quantiles=quantiles)


def autotune(configs, key, early_config_prune):
    """`triton.autotune(configs, key, prune_configs_by={"early_config_prune": ...})`, interpreter-safe."""
    return triton.autotune(configs=configs, key=key, prune_configs_by={"early_config_prune": early_config_prune},
                           do_bench=_bench)
