"""`fastwin.swap` over timm's model zoo: every model either computes what it did or is left unswapped.

Used by tests/test_swap_safety.py (a seeded sample plus the known offenders) and runnable as the full
sweep over `timm.list_models()`:

    python tests/timm_swap_sweep.py [--out sweep.jsonl] [--limit N] [--time-limit 60]

Each model is built without weights (random init, seeded), at a small `img_size` where the model
takes one, in eval mode; its output on a fixed random image is compared before and after
`fastwin.swap(model)`. Outcomes: "swapped" (something replaced, relative error < 1e-5), "unswapped"
(nothing replaced; the output is the model's own), "mismatch" / "broken" (replaced, and the output
moved or the model fails: the defects this guards against), "skipped" (the model does not build or
run on its own here, or is too large for a CPU sweep: the reason is recorded).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import random
import signal
import sys
import time
from typing import Dict, List, Optional

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from helpers import randomize, rel_err  # noqa: E402
from timm_compat import import_timm  # noqa: E402

TOLERANCE = 1e-5
MAX_PARAMS = 100e6  # larger models take too long (and too much memory) on a 2-core CPU
SMALL_SIZES = (64, 96)  # tried in order where the model takes `img_size`; else its default size
KNOWN_OFFENDERS = ["nest_tiny", "volo_d1_224", "samvit_base_patch16", "fastvit_sa12",  # issue 22 item 3
                   "swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256", "vit_tiny_patch16_224",
                   "deit_tiny_distilled_patch16_224"]
SEED = 22  # fixed: the same sample in every run and process


class _Timeout(BaseException):
    """Not an Exception: the `except Exception` around a model's own forward must not catch it."""


def _alarm(seconds: int):
    def handler(signum, frame):
        raise _Timeout(f"over {seconds} s")

    signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)


def _tensors(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


class _NothingMatches(Exception):
    """The model built on meta has no module any swap rule recognises: swap() leaves it as it is."""


def _nothing_matches(meta: torch.nn.Module) -> bool:
    """True when `fastwin.swap` of the meta-device model neither replaced nor probed anything.

    Sound as a shortcut: on meta the rules match by structure alone (values are not compared), a
    superset of what they match on CPU, so the CPU model would not be touched either.
    """
    import fastwin

    try:
        _, report = fastwin.swap(meta)
    except Exception:
        return False
    return not report.replaced and not report.left


def _build(timm, name: str, max_params: float = MAX_PARAMS, shortcut: bool = True):
    """(model, input image [1, C, H, W], its outputs) at the smallest size that builds and runs, or raises."""
    errors = []
    for size in SMALL_SIZES + (None,):
        kwargs = {} if size is None else {"img_size": size}
        try:
            with torch.device("meta"):
                meta = timm.create_model(name, pretrained=False, **kwargs)
            params = sum(p.numel() for p in meta.parameters())
        except Exception as exc:  # some models cannot be built on meta, or do not take img_size
            if size is not None:
                errors.append(f"img_size={size}: {type(exc).__name__}")
                continue
            meta, params = None, None
        if params is not None and params > max_params:
            raise RuntimeError(f"too large for the CPU sweep ({params / 1e6:.0f}M parameters)")
        if shortcut and meta is not None and _nothing_matches(meta):
            raise _NothingMatches()
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, **kwargs).eval()
        randomize(model)
        cfg_size = tuple(getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224)))
        hw = (size, size) if size is not None else cfg_size[1:]
        x = torch.randn(1, cfg_size[0], *hw, generator=torch.Generator().manual_seed(1))
        try:
            with torch.no_grad():
                want = _tensors(model(x))
        except Exception as exc:  # built at this size but does not run there (crossvit at 64 px): next size
            if size is None:
                raise
            errors.append(f"img_size={size} runs: {type(exc).__name__}")
            continue
        return model, x, want
    raise RuntimeError("; ".join(errors))


def check_model(timm, name: str, time_limit: int = 60, max_params: float = MAX_PARAMS, shortcut: bool = True) -> Dict:
    """The outcome of swapping timm model `name` (see the module docstring), as a JSON-able dict.

    With `shortcut`, a model in which no rule recognises any module (`fastwin.swap` on its meta-device
    twin touched nothing) is "unswapped" without running it."""
    import fastwin

    start = time.perf_counter()
    row: Dict = {"model": name}
    _alarm(time_limit)
    try:
        try:
            model, x, want = _build(timm, name, max_params, shortcut)
        except _NothingMatches:
            row.update(outcome="unswapped", why="no swap rule recognises any of its modules (checked on meta)")
            return row
        except Exception as exc:  # the model itself does not build / run here
            row.update(outcome="skipped", why=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                       if str(exc) else type(exc).__name__)
            return row
        row["input"] = list(x.shape[1:])
        _, report = fastwin.swap(model)
        row["replaced"] = dict(report.counts())
        row["left"] = sorted({f"{rule}: {why}" for _, rule, why in getattr(report, "left", [])})
        try:
            with torch.no_grad():
                got = _tensors(model(x))
        except Exception as exc:
            row.update(outcome="broken", why=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            return row
        err = rel_err(got, want)
        row["rel_err"] = err
        if not report.replaced:
            row["outcome"] = "unswapped" if err == 0.0 else "mismatch"
        else:
            row["outcome"] = "swapped" if err < TOLERANCE else "mismatch"
        return row
    except _Timeout as exc:
        row.update(outcome="skipped", why=f"timeout: {exc}")
        return row
    finally:
        signal.alarm(0)
        row["seconds"] = round(time.perf_counter() - start, 2)


def sample(names: List[str], n: int, seed: int = SEED) -> List[str]:
    """The known offenders present in `names` plus `n` others drawn with a fixed seed."""
    always = [m for m in KNOWN_OFFENDERS if m in names]
    rest = sorted(set(names) - set(always))
    return always + random.Random(seed).sample(rest, min(n, len(rest)))


def timm_names() -> List[str]:
    """`timm.list_models()`, or [] where timm cannot be imported."""
    timm = import_timm()
    return timm.list_models() if timm is not None else []


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="JSON lines, one per model (appended as they finish)")
    ap.add_argument("--limit", type=int, help="only this many models (seeded sample after the known offenders)")
    ap.add_argument("--time-limit", type=int, default=60, help="seconds per model")
    ap.add_argument("--resume", action="store_true", help="skip the models --out already has a row for")
    ap.add_argument("--max-params", type=float, default=MAX_PARAMS, help="skip larger models (default 100e6)")
    ap.add_argument("--retry-skipped", action="store_true",
                    help="with --resume: rerun the models --out skipped (e.g. with a larger --max-params)")
    ap.add_argument("--model", action="append", help="only these models (repeatable)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    timm = import_timm()
    names = timm.list_models()
    order = sample(names, len(names) if args.limit is None else args.limit)
    if args.model:
        order = [n for n in order if n in args.model]
    if args.resume and args.out and pathlib.Path(args.out).exists():
        rows = [json.loads(line) for line in open(args.out) if line.strip()]
        retry = {r["model"] for r in rows if r["outcome"] == "skipped"} if args.retry_skipped else set()
        done = {r["model"] for r in rows} - retry
        order = [n for n in order if n not in done]
    counts: Dict[str, int] = {}
    out = open(args.out, "a") if args.out else None
    for i, name in enumerate(order):
        row = check_model(timm, name, args.time_limit, args.max_params)
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
        line = json.dumps(row)
        print(f"[{i + 1}/{len(order)}] {line}", flush=True)
        if out:
            out.write(line + "\n")
            out.flush()
    print(json.dumps(counts))
    return 1 if counts.get("mismatch") or counts.get("broken") else 0


if __name__ == "__main__":
    sys.exit(main())
