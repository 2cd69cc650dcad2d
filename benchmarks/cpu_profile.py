"""Where a model's CPU step spends its time: per-op-family share from torch.profiler.

    python benchmarks/cpu_profile.py swin_tiny_patch4_window7_224 --batch 8 --backend cpp
    python benchmarks/cpu_profile.py uniformer_small --batch 8 --train --backend reference --threads 1
    python benchmarks/cpu_profile.py ... --markdown     # a table row per family, for the README / issues

Every op called from Python (the outermost profiler event of each stack, forward or backward) is put
in one family: attention (the fused op, or SDPA / matmul+softmax / roll / pad / window partition and
reverse of the reference path), Linear (incl. 1x1 convs), LayerNorm, GELU, depthwise conv, dense conv,
BatchNorm, copies (cat, contiguous, clone, reshape copies outside attention), elementwise (residual
adds, layer scale), optimizer, other. The time of an event includes its children, so nothing is counted
twice. With 2+ threads a family's time is wall time on the calling thread (waiting for the OpenMP
workers included); `--threads 1` gives the work itself, which a machine shared with other jobs distorts
less.
"""
from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time

import torch

import fastwin

FAMILIES = ("attention", "Linear", "Linear+GELU", "LayerNorm", "GELU", "dwconv", "conv", "BatchNorm", "copies",
            "elementwise", "optimizer", "other")

_ATTENTION = ("attention", "softmax", "bmm", "baddbmm", "roll", "constant_pad_nd", "pad", "window", "_safe_softmax",
              "scaled_dot_product", "_efficient_attention", "flash_attention", "matmul", "masked_fill", "index")
_COPIES = ("cat", "contiguous", "clone", "copy_", "reshape", "_unsafe_view", "permute", "transpose", "flatten",
           "stack", "select_backward", "slice_backward", "view_backward", "expand", "to", "_to_copy", "empty")
_ELEMENTWISE = ("add", "mul", "div", "sub", "neg", "sum", "mean", "logsumexp", "ones_like", "fill_", "zero_",
                "where", "exp", "log", "pow", "rsqrt", "sqrt", "lerp", "addcmul", "addcdiv")


def family(name: str, shapes=None) -> str:
    """The op family of a top-level profiler event name (forward op or autograd node)."""
    n = name.lower()
    if n.startswith("optimizer.") or "sgd" in n or "_foreach" in n:
        return "optimizer"
    if "fastwin_c::dwconv" in n or "dwconv" in n:
        return "dwconv"
    if "linear_gelu" in n:  # the fused fc1 + GELU op: a GEMM with the activation in its epilogue
        return "Linear+GELU"
    if "fastwin_c::" in n or "fastwin::" in n:
        return "attention"
    for key, fam in (("layer_norm", "LayerNorm"), ("layernorm", "LayerNorm"), ("gelu", "GELU"),
                     ("batch_norm", "BatchNorm"), ("batchnorm", "BatchNorm"), ("linear", "Linear"),
                     ("addmm", "Linear"), ("mmbackward", "Linear"), ("aten::mm", "Linear"), ("tbackward", "Linear")):
        if key in n:
            return fam
    if "conv" in n:
        weight = shapes[1] if shapes and len(shapes) > 1 and shapes[1] else None
        if weight is not None and len(weight) == 4:
            if weight[1] == 1:
                return "dwconv"
            if weight[2] == weight[3] == 1:
                return "Linear"
        return "conv"
    if any(k in n for k in _ATTENTION):
        return "attention"
    if any(k in n for k in _COPIES):
        return "copies"
    if any(k in n for k in _ELEMENTWISE):
        return "elementwise"
    return "other"


def _conv_kind(event):
    """Depthwise / 1x1 / dense for a ConvolutionBackward0 node, from its child's weight shape."""
    for child in event.cpu_children:
        if "convolution_backward" in child.name and child.input_shapes and len(child.input_shapes) > 2:
            w = child.input_shapes[2]
            if len(w) == 4:
                return "dwconv" if w[1] == 1 else ("Linear" if w[2] == w[3] == 1 else "conv")
    return "conv"


def profile_step(step, steps: int = 1):
    """{family: seconds per step} and the step's wall seconds, from `steps` profiled calls."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t0) / steps
    totals = collections.Counter()
    for ev in prof.events():
        if ev.cpu_parent is not None:
            continue
        name = ev.name
        if name.startswith("autograd::engine::evaluate_function: "):
            name = name.split(": ", 1)[1]
            fam = _conv_kind(ev) if name.startswith("ConvolutionBackward") else family(name)
        elif name.startswith("ProfilerStep") or name.startswith("cudaDeviceSynchronize"):
            continue
        else:
            fam = family(name, ev.input_shapes)
        totals[fam] += ev.cpu_time_total / 1e6 / steps
    return dict(totals), wall


def make_step(model_name, batch, img, train, backend):
    if backend in ("timm",):
        sys.path.insert(0, __file__.rsplit("/", 1)[0])
        from timm_shim import import_timm

        model = import_timm().create_model(model_name, img_size=img)
        backend = "reference"
    else:
        model = fastwin.create_model(model_name, img_size=img)
    model.train(train)
    x = torch.randn(batch, 3, img, img)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6) if train else None

    def step():
        with fastwin.set_backend(backend):
            if train:
                model(x).logsumexp(-1).mean().backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            else:
                with torch.inference_mode():
                    model(x)

    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--backend", action="append",
                    help="reference, cpp, auto, timm (repeatable; default reference, cpp)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=3, help="profiled steps per backend (median of each family)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = args.backend or ["reference", "cpp"]
    results = {}
    for backend in backends:
        step = make_step(args.model, args.batch, args.img_size, args.train, backend)
        step()  # warm-up
        runs = [profile_step(step) for _ in range(args.steps)]
        fams = {f: statistics.median(r[0].get(f, 0.0) for r in runs) for f in FAMILIES}
        results[backend] = (fams, statistics.median(r[1] for r in runs))
    title = (f"{args.model} b{args.batch} {args.img_size}px {'training step' if args.train else 'inference'}, "
             f"fp32, {torch.get_num_threads()} threads, median of {args.steps} profiled steps")
    print(title)
    head = "| family | " + " | ".join(f"{b} ms (share)" for b in backends) + " |"
    print(head if args.markdown else head.replace("|", " ").strip())
    if args.markdown:
        print("|---|" + "---|" * len(backends))
    for f in FAMILIES:
        if all(results[b][0][f] < 1e-4 for b in backends):
            continue
        cells = []
        for b in backends:
            fams, _ = results[b]
            total = sum(fams.values())
            cells.append(f"{fams[f] * 1e3:.0f} ({100 * fams[f] / total:.0f}%)")
        print(f"| {f} | " + " | ".join(cells) + " |" if args.markdown
              else f"  {f:<12} " + "  ".join(c.rjust(14) for c in cells))
    totals = [f"{sum(results[b][0].values()) * 1e3:.0f} (wall {results[b][1] * 1e3:.0f})" for b in backends]
    print("| total | " + " | ".join(totals) + " |" if args.markdown else "  total        " + "  ".join(totals))


if __name__ == "__main__":
    main()
