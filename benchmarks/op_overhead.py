"""Per-op Python overhead on CPU: a `fastwin.ops` call (argument checks, call description, backend
choice) minus the raw `torch.ops.fastwin_C` kernel call it ends in, on a tiny input, one thread, no grad.

    python benchmarks/op_overhead.py

Prints min-over-blocks microseconds per call; the difference is what dispatch costs per op.
"""
from __future__ import annotations

import time

import torch

import fastwin
from fastwin import ops


def _bench(fn, n: int = 3000, blocks: int = 7) -> float:
    for _ in range(300):
        fn()
    best = float("inf")
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def main() -> None:
    if not fastwin.backends()["cpp"]:
        raise SystemExit(f"needs the cpp backend: {fastwin.backends().reasons['cpp']}")
    torch.set_num_threads(1)
    qkv = torch.randn(1, 4, 4, 3 * 2 * 16)
    xw = torch.randn(2, 49, 3 * 2 * 16)
    C = torch.ops.fastwin_C
    cases = [
        ("shifted_window_attention", lambda: ops.shifted_window_attention(qkv, 2, 4, 0),
         lambda: C.shifted_window_attention_fwd(qkv, None, None, 2, [4, 4], [0, 0], 0.25, False)),
        ("attention", lambda: ops.attention(xw, 2), lambda: C.attention_fwd(xw, 2, 0.25)),
    ]
    with torch.no_grad():
        for name, op, raw in cases:
            t_op, t_raw = _bench(op), _bench(raw)
            print(f"{name}: op {t_op:.1f} us, raw kernel {t_raw:.1f} us, Python overhead {t_op - t_raw:.1f} us")


if __name__ == "__main__":
    main()
