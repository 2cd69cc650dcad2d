"""Autotune configs of the window-attention kernels (`window_attention.py`): tile tables and prunes.

The tables are data measured with `benchmarks/kernel_resources.py`, which compiles every kernel for
sm_90 (and sm_80) at the Swin-T/S/B and UniFormer-S shapes in fp16/bf16/fp32 with both triton 3.6
and the newest triton, and reports registers and spills: an entry stays only if no kept build
spills, and forward entries only if they also fit 128 registers (16 resident warps per SM).
"""
from __future__ import annotations

import triton
from triton.runtime import driver as _driver

from . import interpreting


def _cfg(bm, bn, warps, stages, maxnreg=None):
    """HOIST (with num_stages 1): when all keys are one block, load the bias tile once per program
    into registers. Unpipelined per-window loads land in a blocked layout, and the compiler then
    recomputes the softmax in that layout too; pipelined (num_stages 2) loads come from shared
    memory straight into the dot's layout, so there the tile is reloaded per window (L1 hits)."""
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "HOIST": stages == 1}, num_warps=warps,
                         num_stages=stages, maxnreg=maxnreg)


# Tile tables, per kernel and regime (storage "lp" = fp16/bf16 or "f32"; head dim padded to <= 32
# or larger): (BLOCK_M, BLOCK_N, warps, stages, maxnreg, mode[, gpus]). Mode "one": the blocked axis
# (keys in the forward and dq kernels, queries in dkdv) is a single block of NP; "multi": several
# blocks. Optional gpus "hopper" (sm_90+) or "pre-hopper": the entry is kept only there.
# Every entry was compiled for sm_90 at the Swin / UniFormer shapes with
# benchmarks/kernel_resources.py and kept only without spills; forward entries also use <= 128
# registers. fp32 uses IEEE dots (FMA, operands in registers), hence its smaller tiles.
_SMALL = [(16, 16, 4, 1, None, "one"), (32, 32, 4, 1, None, "one")]  # 4x4 / 4x8 windows
_FWD_TILES = {  # maxnreg 128: 16 resident warps per SM guaranteed, not left to ptxas (checked spill-free)
    ("lp", 32): _SMALL + [(64, 64, 8, 1, 128, "one"), (64, 64, 8, 2, 128, "one"), (64, 32, 4, 1, 128, "multi"),
                          (64, 32, 4, 2, 128, "multi"), (64, 64, 8, 1, 128, "multi")],
    ("lp", 128): _SMALL + [(64, 64, 8, 1, 128, "one"), (64, 64, 8, 2, 128, "one"), (64, 32, 8, 2, 128, "multi"),
                           (64, 64, 8, 1, 128, "multi"), (32, 32, 4, 1, 128, "multi")],
    ("f32", 32): _SMALL + [(32, 32, 4, 2, None, "one"), (64, 64, 8, 1, None, "one"), (32, 32, 4, 1, None, "multi"),
                           (32, 32, 4, 2, None, "multi")],
    # UniFormer-S stage 4 (NP 64, one block): (32, 64, 8, 2) gave way to (16, 64, 4, 2), as triton 3.9's
    # sm_90 build of it has a 16 B stack frame at 80 registers (3.6: none); (16, 64, 4, 2): 96 registers,
    # no stack on sm_90 and sm_80 with both tritons. (32, 64, 8, 1) keeps that tile unpipelined.
    ("f32", 128): _SMALL + [(32, 64, 8, 1, None, "one"), (16, 64, 4, 2, None, "one"), (16, 64, 4, 1, None, "one"),
                            (32, 64, 8, 1, None, "multi"), (32, 32, 8, 1, None, "multi"), (32, 32, 4, 1, None, "multi"),
                            (32, 64, 8, 2, None, "multi")],
}
_DQ_TILES = {
    ("lp", 32): _SMALL + [(16, 64, 4, 1, None, "one"), (16, 64, 4, 1, None, "multi"), (64, 32, 4, 1, None, "multi")],
    ("lp", 128): _SMALL + [(32, 64, 8, 1, None, "one"), (16, 64, 4, 1, None, "one"), (32, 64, 8, 1, None, "multi"),
                           (16, 64, 4, 1, None, "multi"), (64, 32, 8, 2, None, "multi")],
    # Multi-block (window 12, NP 256): triton 3.9's sm_80 builds of (16, 64, 4) keep a 24-32 B stack
    # frame at 96 registers (3.6: 108-112 registers, none; sm_90: none with either), so before Hopper
    # it gives way to (32, 64, 8): 110-116 registers, no stack on sm_80 with both tritons (its sm_90
    # build with 3.9 has 8 B at the shifted map).
    ("f32", 32): _SMALL + [(16, 64, 4, 1, None, "one"), (32, 64, 8, 1, None, "one"),
                           (16, 64, 4, 1, None, "multi", "hopper"), (32, 64, 8, 1, None, "multi", "pre-hopper")],
    ("f32", 128): _SMALL + [(16, 64, 4, 1, None, "one"), (16, 64, 4, 1, None, "multi")],
}
_DKDV_TILES = {
    ("lp", 32): _SMALL + [(64, 16, 4, 1, None, "one"), (64, 16, 8, 1, None, "one"), (64, 32, 4, 1, None, "one"),
                          (32, 64, 8, 1, None, "multi"), (16, 64, 4, 1, None, "multi"), (64, 16, 4, 1, None, "multi"),
                          (64, 16, 8, 1, None, "multi")],
    ("lp", 128): _SMALL + [(64, 16, 4, 1, None, "one"), (64, 16, 8, 1, None, "one"), (64, 32, 8, 1, None, "one"),
                           (64, 16, 4, 1, None, "multi"), (64, 16, 8, 1, None, "multi"), (64, 32, 8, 1, None, "multi"),
                           (32, 64, 8, 1, None, "multi")],
    ("f32", 32): _SMALL + [(32, 32, 4, 1, None, "multi"), (32, 16, 4, 1, None, "multi"), (16, 32, 4, 1, None, "multi"),
                           (32, 32, 8, 1, None, "multi")],
    ("f32", 128): _SMALL + [(16, 16, 4, 1, None, "multi"), (32, 16, 4, 1, None, "multi"),
                            (32, 32, 8, 1, None, "multi")],
}


def _configs(tables):
    """Every table entry, and each capped entry also uncapped (pre-Hopper GPUs get no maxnreg)."""
    seen = {}
    for entries in tables.values():
        for bm, bn, w, st, r, *_ in entries:
            for cap in {r, None}:
                seen.setdefault((bm, bn, w, st, cap), _cfg(bm, bn, w, st, cap))
    return list(seen.values())


def _target_arch() -> int:
    """SM version the JIT compiles for (the active driver's target); 0 without a CUDA driver."""
    try:
        target = _driver.active.get_current_target()
    except Exception:  # no GPU driver: the interpreter or a CPU-only process
        return 0
    return int(target.arch) if target.backend == "cuda" and str(target.arch).isdigit() else 0


FWD_CONFIGS, DQ_CONFIGS, DKDV_CONFIGS = _configs(_FWD_TILES), _configs(_DQ_TILES), _configs(_DKDV_TILES)


def _merged(named_args, kwargs):
    args = dict(named_args)
    args.update(kwargs)
    return args


def _prune(configs, args, tables, axis):
    """The configs of this call's regime whose blocks fit NP; `axis` is the blocked dimension.

    The tables were measured on sm_90; on older GPUs (mma.sync needs more registers than wgmma) the
    register caps are dropped, as a cap of 128 made those builds spill, and entries marked for the
    other GPU family are skipped.
    """
    np_ = args["NP"]
    regime = ("lp" if args["qkv"].element_size() == 2 else "f32", 32 if args["D_PAD"] <= 32 else 128)
    arch = _target_arch()
    hopper = arch == 0 or arch >= 90
    family = "hopper" if hopper else "pre-hopper"
    allowed = {}
    for bm, bn, w, st, r, m, *gpus in tables[regime]:
        if gpus in ([], [family]):
            allowed.setdefault((bm, bn, w, st, r if hopper else None), set()).add(m)

    def mode(c):
        return "one" if c.kwargs[axis] == np_ else "multi"

    def key(c):
        return (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages, c.maxnreg)

    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= np_ and c.kwargs["BLOCK_N"] <= np_
            and mode(c) in allowed.get(key(c), ())]
    if not kept:  # a regime the tables do not cover: the smallest tile (correct, maybe slow)
        kept = [c for c in configs if key(c) == (16, 16, 4, 1, None)]
    if interpreting():  # one config, so the interpreter never benchmarks: one block if possible, big tiles
        kept = [max(kept, key=lambda c: (mode(c) == "one", c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"]))]
    return kept


def prune_fwd(configs, named_args, **kwargs):
    return _prune(configs, _merged(named_args, kwargs), _FWD_TILES, "BLOCK_N")


def prune_dq(configs, named_args, **kwargs):
    return _prune(configs, _merged(named_args, kwargs), _DQ_TILES, "BLOCK_N")


def prune_dkdv(configs, named_args, **kwargs):
    return _prune(configs, _merged(named_args, kwargs), _DKDV_TILES, "BLOCK_M")
