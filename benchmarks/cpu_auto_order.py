"""Which backend `auto` should try first on CPU, per op: cpp vs reference at real model shapes.

    python benchmarks/cpu_auto_order.py                 # batch 8, 224px stage shapes, fwd and fwd+bwd
    python benchmarks/cpu_auto_order.py --threads 1     # CPU time of one thread: robust on a shared machine

Each op runs in interleaved rounds (reference and cpp alternate, order flipped every round); the
speedup is the median [min-max] of the per-round ratios. With `--threads 1` samples are process CPU
time, which other jobs on the machine cannot inflate; otherwise wall time on all threads.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import fastwin
from fastwin import ops


def cases(batch):
    """(op family, label, make_inputs(grad) -> args, fn(*args))."""
    out = []
    for s, (hw, heads) in enumerate(((56, 3), (28, 6), (14, 12), (7, 24))):
        shift, C = (3 if hw > 7 else 0), heads * 32

        def make(grad, hw=hw, heads=heads, C=C):
            return [torch.randn(batch, hw, hw, 3 * C, requires_grad=grad),
                    (0.02 * torch.randn(169, heads)).requires_grad_(grad),
                    (0.02 * torch.randn(3 * C)).requires_grad_(grad)]

        def swin(q, t, b, heads=heads, shift=shift):
            return ops.shifted_window_attention(q, heads, 7, shift, t, b)

        out.append(("shifted_window_attention", f"swin_t s{s + 1} {hw}x{hw} h{heads} shift {shift}", make, swin))
    for label, n, heads in (("uniformer_s s3 N196 h5", 196, 5), ("uniformer_s s4 N49 h8", 49, 8),
                            ("deit_s N197 h6", 197, 6)):
        def make_qkv(grad, n=n, heads=heads):
            return [torch.randn(batch, n, 3 * heads * 64, requires_grad=grad)]

        out.append(("attention", label, make_qkv, lambda q, heads=heads: ops.attention(q, heads)))
    for label, C, hw, k, res in (("uniformer_s s1 pos 3x3 C64 56", 64, 56, 3, True),
                                 ("uniformer_s s1 attn 5x5 C64 56", 64, 56, 5, False),
                                 ("uniformer_s s2 pos 3x3 C128 28", 128, 28, 3, True),
                                 ("uniformer_s s2 attn 5x5 C128 28", 128, 28, 5, False),
                                 ("uniformer_s s3 pos 3x3 C320 14", 320, 14, 3, True)):
        def make(grad, C=C, hw=hw, k=k):
            return [torch.randn(batch, C, hw, hw, requires_grad=grad),
                    (0.1 * torch.randn(C, 1, k, k)).requires_grad_(grad), torch.randn(C, requires_grad=grad)]

        out.append(("dwconv2d", label, make, lambda x, w, b, res=res: ops.dwconv2d(x, w, b, residual=res)))
    for label, C, hw in (("uniformer_s s3 dpe+LN C320 14", 320, 14), ("uniformer_s s4 dpe+LN C512 7", 512, 7)):
        def make(grad, C=C, hw=hw):
            return [torch.randn(batch, C, hw, hw, requires_grad=grad),
                    (0.1 * torch.randn(C, 1, 3, 3)).requires_grad_(grad)] + [torch.randn(C, requires_grad=grad)
                                                                             for _ in range(3)]

        def dpe_ln(x, w, b, lw, lb):
            return ops.dwconv_layernorm(x, w, b, lw, lb, 1e-6)

        out.append(("dwconv_layernorm", label, make, dpe_ln))
    return out


def step_for(fn, args, train):
    def step():
        if not train:
            with torch.no_grad():
                fn(*args)
            return
        out = fn(*args)
        outs = out if isinstance(out, tuple) else (out,)
        torch.autograd.grad(outs, [a for a in args if a.requires_grad], [torch.ones_like(o) for o in outs],
                            allow_unused=True)

    return step


def measure(step_ref, step_cpp, rounds, clock):
    times = {"reference": [], "cpp": []}
    pairs = (("reference", step_ref), ("cpp", step_cpp))
    for backend, step in pairs:
        with fastwin.set_backend(backend):
            step()
    for r in range(rounds):
        for backend, step in pairs[:: 1 if r % 2 == 0 else -1]:
            with fastwin.set_backend(backend):
                t0 = clock()
                step()
                times[backend].append(clock() - t0)
    ratios = sorted(a / b for a, b in zip(times["reference"], times["cpp"]))
    return statistics.median(times["reference"]), statistics.median(times["cpp"]), ratios


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    print(f"batch {args.batch}, fp32, {torch.get_num_threads()} threads, "
          f"{'process CPU time' if clock is time.process_time else 'wall time'}, {args.rounds} interleaved rounds")
    print(f"{'op':<26} {'case':<34} {'mode':<8} {'ref ms':>8} {'cpp ms':>8}  cpp speedup median [min-max]")
    for op, label, make, fn in cases(args.batch):
        for train in (False, True):
            a = make(train)
            ref_ms, cpp_ms, ratios = measure(step_for(fn, a, train), step_for(fn, a, train), args.rounds, clock)
            print(f"{op:<26} {label:<34} {'fwd+bwd' if train else 'fwd':<8} {ref_ms * 1e3:8.2f} {cpp_ms * 1e3:8.2f}  "
                  f"{statistics.median(ratios):.2f} [{ratios[0]:.2f}-{ratios[-1]:.2f}]", flush=True)


if __name__ == "__main__":
    main()
