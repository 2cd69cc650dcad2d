"""Command line: `fastwin info | check | bench` (also `python -m fastwin`)."""
from __future__ import annotations

import argparse
import os
import platform
import sys

import torch

from . import __version__, backends, bench, list_models


def _device(device):
    """The --device value (already a checked `torch.device`) or the default: cuda if present."""
    if device is not None:
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _device_arg(text: str) -> torch.device:
    """--device: "cpu", "cuda" or "cuda:N", refused at parse time when this machine cannot run it."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available here (torch.cuda.is_available() is "
                                             "False; see `fastwin info`)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: there are {torch.cuda.device_count()} CUDA device(s)")
    return device


def cmd_info(args) -> int:
    print(f"fastwin {__version__}")
    print(f"python {platform.python_version()}, torch {torch.__version__}", end="")
    try:
        import triton

        print(f", triton {triton.__version__}")
    except ImportError:
        print(", triton not installed")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"device: {p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}")
    else:
        print(f"device: CPU only ({torch.get_num_threads()} threads)")
    table = backends()
    print(f"backend choice: {os.environ.get('FASTWIN_BACKEND') or 'auto'} (FASTWIN_BACKEND or fastwin.set_backend)")
    for name in table:
        print(f"  {name:<10} {'available' if table[name] else 'unavailable: ' + table.reasons[name]}")
    return 0


def cmd_check(args) -> int:
    from .check import count_checks, format_rows, run_checks

    device = _device(args.device)
    table = backends()
    names = args.backend or [n for n in table if table[n]]
    bar = bench.Progress(count_checks(device, names), "checking", enabled=not args.quiet)
    rows = run_checks(device, names, progress=lambda what: bar.update(what))
    bar.close()
    print(format_rows(rows))
    bad = [r for r in rows if r.failed]
    fast = {r.backend for r in rows if r.backend != "reference" and r.status == "ok"}
    if not fast:
        print("\nno fast backend ran here (see `fastwin info`); only the reference was checked")
    print(f"\n{len(rows) - len(bad)} ok/skipped, {len(bad)} failed")
    return 1 if bad else 0


def cmd_bench(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    model = args.model or "swin_tiny_patch4_window7_224"
    batch = args.batch if args.batch is not None else (64 if device.type == "cuda" else 2)
    dtype = bench.DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    names = args.backend or bench.candidates(device, compile_reference=not args.no_compile)
    title = (f"{model}, batch {batch}, {str(dtype)[6:]}, {'training step' if args.train else 'inference'}, "
             f"{device.type}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
             + f", {torch.get_num_threads()} threads, {args.clock} time")
    results = bench.bench_model(model, batch, dtype, args.train, device, img_size=args.img_size, names=names,
                                rounds=args.iters, warmup=args.warmup, progress=not args.quiet, clock=args.clock)
    print(bench.format_table(results, title))
    if args.plot:
        bench.plot({f"{model}\nb{batch} {'train' if args.train else 'infer'}": results}, args.plot)
        print(f"plot written to {args.plot}")
    return 1 if any(r.failed for r in results) else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastwin", description="fused Swin / UniFormer / ViT kernels")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, device, which backends work and why the others don't")
    c = sub.add_parser("check", help="compare every available backend with the reference, fwd and bwd")
    c.add_argument("--device", type=_device_arg, help="cpu or cuda (default: cuda if present)")
    c.add_argument("--backend", action="append", choices=bench.BACKENDS, help="only these backends")
    c.add_argument("--quiet", action="store_true")
    b = sub.add_parser("bench", help="img/s and memory of the reference vs the fused backends")
    b.add_argument("--model", help="model name (see fastwin.list_models()); default swin_tiny_patch4_window7_224")
    b.add_argument("--batch", type=_positive, help="batch size (default 2 on CPU, 64 on GPU)")
    b.add_argument("--dtype", choices=sorted(bench.DTYPES), help="default fp32 on CPU, bf16 (autocast) on GPU")
    b.add_argument("--img-size", type=_positive, help="input resolution (default: the model's)")
    b.add_argument("--train", action="store_true", help="time a training step instead of inference")
    b.add_argument("--backend", action="append", choices=bench.RUNNERS, metavar="RUNNER",
                   help=f"only these, repeatable; one of {', '.join(bench.RUNNERS)} "
                        "(timm needs timm installed; +compile is torch.compile)")
    b.add_argument("--no-compile", action="store_true", help="skip the torch.compile(reference) baseline")
    b.add_argument("--iters", type=_positive, default=5, help="interleaved timing rounds (default 5)")
    b.add_argument("--warmup", type=_non_negative, default=1, help="untimed calls per runner first (default 1)")
    b.add_argument("--device", type=_device_arg, help="cpu or cuda (default: cuda if present)")
    b.add_argument("--threads", type=_positive, help="CPU threads (torch.set_num_threads)")
    b.add_argument("--clock", choices=tuple(bench.CLOCKS), default="wall",
                   help="wall (default) or cpu: process CPU time, robust on a shared machine with --threads 1")
    b.add_argument("--plot", metavar="FILE.png", help="write a speedup bar chart (needs matplotlib)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    p.bench_parser = b  # for usage errors found after parsing (an unknown --model)
    return p


def _int_at_least(low: int):
    """An argparse `type` for ints >= `low` (a usage error naming the flag otherwise, no traceback)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


_positive, _non_negative = _int_at_least(1), _int_at_least(0)


def _check_model(parser: argparse.ArgumentParser, name) -> None:
    """An unknown --model is a usage error naming the closest registered models."""
    if name is None or name.partition(".")[0] in list_models():
        return
    close = bench.suggest_models(name)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    parser.error(f"argument --model: unknown model {name!r}{hint} (all: fastwin.list_models())")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        _check_model(parser.bench_parser, args.model)
    return {"info": cmd_info, "check": cmd_check, "bench": cmd_bench}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
