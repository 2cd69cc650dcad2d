"""A/B of the fused Linear + GELU (`fastwin.ops.linear_gelu`, cpp kernel on CPU) inside whole models.

fastwin's `Mlp` runs `fc1` and its GELU as one op; `unfuse_mlps(model)` makes a copy run them as
torch's Linear then GELU, so one run measures what the fusion is worth:

    python benchmarks/fused_ops.py swin_tiny_patch4_window7_224 --batch 8 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

import fastwin
from fastwin.layers import Mlp


def unfuse_mlps(model: nn.Module) -> int:
    """Make every fastwin `Mlp` of `model` run Linear and GELU separately; returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, Mlp):
            m.forward = lambda x, m=m: m.drop(m.fc2(m.drop(m.act(m.fc1(x)))))
            n += 1
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description="A/B: a model's CPU step with and without the fused Linear+GELU")
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    plain = fastwin.create_model(args.model, img_size=args.img_size).train(args.train)
    fused = fastwin.create_model(args.model, img_size=args.img_size).train(args.train)
    fused.load_state_dict(plain.state_dict())
    print(f"unfused {unfuse_mlps(plain)} MLPs of the baseline copy")
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)

    def step(model):
        with fastwin.set_backend("cpp"):
            if args.train:
                model(x).logsumexp(-1).mean().backward()
                return None
            with torch.inference_mode():
                return model(x)

    if not args.train:
        a, b = step(plain), step(fused)
        print(f"max |logits difference| {(a - b).abs().max().item():.2e}")
    clocks = {"cpu s": time.process_time, "wall s": time.perf_counter}
    times = {k: {"plain": [], "fused": []} for k in clocks}
    for r in range(args.rounds):
        for name, model in (("plain", plain), ("fused", fused))[:: 1 if r % 2 == 0 else -1]:
            t = {k: c() for k, c in clocks.items()}
            step(model)
            for k, c in clocks.items():
                times[k][name].append(c() - t[k])
    for k in clocks:
        ratios = sorted(p / f for p, f in zip(times[k]["plain"], times[k]["fused"]))
        print(f"{k}: plain {statistics.median(times[k]['plain']):.3f}  fused {statistics.median(times[k]['fused']):.3f}"
              f"  speedup median {statistics.median(ratios):.3f} [{ratios[0]:.3f}-{ratios[-1]:.3f}]")


if __name__ == "__main__":
    main()
