"""Backend conformance: one case table, the SPEC §6 tolerance rule and a runner, shared by the test
suite (`tests/test_conformance.py`) and `fastwin check`.

For a case, a backend and a dtype, `run_case`:
  1. draws fresh random inputs in the dtype (fp64 values rounded to it);
  2. runs the op on the backend (strictly: no silent fallback) and, on the same inputs, the reference
     in the same dtype and in fp64, forward and backward with one random cotangent (`reference_run`,
     which several backends of one (case, dtype) can share);
  3. checks every result with the rule `|fast - exact| <= 2 |ref_lowp - exact| + floor * max(|exact|, 1)`
     and that the backend returned gradients for exactly the inputs the reference did.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import dispatch, ops

FLOORS = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def bound(ref_lowp: torch.Tensor, exact: torch.Tensor, dtype: torch.dtype, factor: float = 2.0) -> float:
    """The SPEC §6 bound for a fast path's error against `exact`."""
    scale = max(exact.double().abs().max().item(), 1.0) if exact.numel() else 1.0
    return factor * max_err(ref_lowp, exact) + FLOORS[dtype] * scale


# --------------------------------------------------------------------------------------------- the cases

@dataclasses.dataclass(frozen=True)
class Input:
    """One argument of a case: a random tensor (`shape`, `scale`, `grad`), or None."""

    name: str
    shape: Optional[Tuple[int, ...]]
    scale: float = 1.0
    grad: bool = True
    layout: str = "contiguous"  # "contiguous", "channels_last", "strided" (every other channel), "transposed"
    fill: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # reshapes the random values (masks)


@dataclasses.dataclass(frozen=True)
class Case:
    """`fn(*tensors, backend=...)` on `inputs`; `op` names the dispatched op (for `ops.describe`)."""

    name: str
    op: str
    inputs: Tuple[Input, ...]
    fn: Callable
    quick: bool = False  # part of `fastwin check`'s short list
    dtypes: Tuple[torch.dtype, ...] = DTYPES

    def make(self, device, dtype) -> List[Optional[torch.Tensor]]:
        return [_make(i, device, dtype) for i in self.inputs]

    def describe(self, tensors) -> dispatch.Call:
        return self.fn(*tensors, describe=True)


def _make(spec: Input, device, dtype) -> Optional[torch.Tensor]:
    if spec.shape is None:
        return None
    shape = list(spec.shape)
    if spec.layout == "strided":
        shape[-1] *= 2
    t = torch.randn(*shape, dtype=torch.float64) * spec.scale
    if spec.fill is not None:
        t = spec.fill(t)
    t = t.to(device=device, dtype=dtype)
    if spec.layout == "strided":
        t = t[..., ::2]
    elif spec.layout == "channels_last":
        t = t.contiguous(memory_format=torch.channels_last)
    elif spec.layout == "transposed":  # same values, a transposed memory layout
        t = t.transpose(0, 1).contiguous().transpose(0, 1)
    return t


def _table(window) -> Tuple[int, ...]:
    return ((2 * window[0] - 1) * (2 * window[1] - 1),)


def _op_fn(op: str, inputs: Sequence[Input], **kwargs) -> Callable:
    """fn(*tensors, backend=None, describe=False) calling `fastwin.ops.<op>` with the tensors as keyword
    arguments named like the inputs, plus `kwargs`."""
    run, names = getattr(ops, op), [i.name for i in inputs]

    def fn(*tensors, backend=None, describe=False):
        args = dict(zip(names, tensors), **kwargs)
        return ops.describe(op, **args) if describe else run(**args, backend=backend)

    return fn


def _logit_scales(t: torch.Tensor) -> torch.Tensor:
    """Swin V2 per-head logit multipliers from 1 up to its clamp, 100: saturated softmaxes included."""
    return 1.0 + 99.0 * torch.rand(t.shape, dtype=torch.float64)


def swin_case(name, B, H, W, heads, d, window, shift=(0, 0), order="roll_pad", table=True, qkv_bias=True,
              scale=None, layout="contiguous", qkv_scale=1.0, cosine=False, quick=False) -> Case:
    C3 = 3 * heads * d
    inputs = (
        Input("qkv", (B, H, W, C3), qkv_scale, layout=layout),
        Input("rel_pos_bias_table", _table(window) + (heads,) if table else None, 0.5),
        Input("qkv_bias", (C3,) if qkv_bias else None, 0.5),
        Input("logit_scale", (heads,) if cosine else None, fill=_logit_scales),
    )

    fn = _op_fn("shifted_window_attention", inputs, num_heads=heads, window_size=window, shift_size=shift,
                scale=scale, pad_order=order)
    return Case(name, "shifted_window_attention", inputs, fn, quick)


def _sparse_mask(t: torch.Tensor) -> torch.Tensor:
    """Swin-like additive mask: 0, or -100 on ~30% of the pairs."""
    return torch.where(torch.rand(t.shape, dtype=torch.float64) < 0.3, -100.0, 0.0) + 0.1 * t


def _row_of_neg_inf(t: torch.Tensor) -> torch.Tensor:
    """A mask whose first query row is all -inf (that query may attend to nothing) and whose first key
    column is -inf for every other row (an online softmax's first key block is fully masked)."""
    t = t.clone()
    t[:, 0, :] = float("-inf")
    t[:, 1:, 0] = float("-inf")
    return t


def window_case(name, nW, B, heads, d, window, mask: Optional[Callable] = _sparse_mask, mask_grad=True,
                table=True, scale=None, layout="contiguous", cosine=False, quick=False) -> Case:
    N = window[0] * window[1]
    inputs = (
        Input("qkv", (B * nW, N, 3 * heads * d), layout=layout),
        Input("rel_pos_bias_table", _table(window) + (heads,) if table else None, 0.5),
        Input("mask", (nW, N, N) if mask is not None else None, grad=mask_grad, fill=mask),
        Input("logit_scale", (heads,) if cosine else None, fill=_logit_scales),
    )
    fn = _op_fn("window_attention", inputs, num_heads=heads, window_size=window, scale=scale)
    return Case(name, "window_attention", inputs, fn, quick)


def attention_case(name, B, N, heads, d, scale=None, quick=False) -> Case:
    inputs = (Input("qkv", (B, N, 3 * heads * d)),)
    return Case(name, "attention", inputs, _op_fn("attention", inputs, num_heads=heads, scale=scale), quick)


def dwconv_case(name, B, C, H, W, k, layout="NCHW", memory="contiguous", residual=False, bias=True,
                quick=False) -> Case:
    shape = (B, C, H, W) if layout == "NCHW" else (B, H, W, C)
    inputs = (Input("x", shape, layout=memory), Input("weight", (C, 1, k, k), 0.3),
              Input("bias", (C,) if bias else None))
    return Case(name, "dwconv2d", inputs, _op_fn("dwconv2d", inputs, residual=residual, layout=layout), quick)


def dwconv_layernorm_case(name, B, C, H, W, k=3, layout="NCHW", memory="contiguous", quick=False) -> Case:
    shape = (B, C, H, W) if layout == "NCHW" else (B, H, W, C)
    inputs = (Input("x", shape, layout=memory), Input("weight", (C, 1, k, k), 0.3), Input("bias", (C,)),
              Input("ln_weight", (C,)), Input("ln_bias", (C,)))
    return Case(name, "dwconv_layernorm", inputs, _op_fn("dwconv_layernorm", inputs, layout=layout), quick)


def linear_gelu_case(name, shape, out_features, bias=True, approximate="none", layout="contiguous",
                     quick=False) -> Case:
    k = shape[-1]
    inputs = (Input("x", shape, layout=layout), Input("weight", (out_features, k), k ** -0.5),
              Input("bias", (out_features,) if bias else None))
    return Case(name, "linear_gelu", inputs, _op_fn("linear_gelu", inputs, approximate=approximate), quick)


def linear_case(name, shape, out_features, bias=True, residual=False, layout="contiguous", quick=False) -> Case:
    k = shape[-1]
    inputs = (Input("x", shape, layout=layout), Input("weight", (out_features, k), k ** -0.5),
              Input("bias", (out_features,) if bias else None),
              Input("residual", tuple(shape[:-1]) + (out_features,) if residual else None))
    return Case(name, "linear", inputs, _op_fn("linear", inputs), quick)


def conv1x1_case(name, B, C, H, W, out_channels, gelu=None, residual=False, memory="contiguous",
                 quick=False) -> Case:
    inputs = (Input("x", (B, C, H, W), layout=memory), Input("weight", (out_channels, C, 1, 1), C ** -0.5),
              Input("bias", (out_channels,)), Input("residual", (B, out_channels, H, W) if residual else None))
    return Case(name, "conv1x1", inputs, _op_fn("conv1x1", inputs, gelu=gelu), quick)


# Small shapes: the Triton interpreter runs every program instance in Python (~3 ms each).
CASES: Tuple[Case, ...] = (
    # shifted windows: shifted/unshifted, divisible/not, both pad orders, batch 1/2, optional inputs
    swin_case("swin w7 s3 10x9 roll_pad", 1, 10, 9, 2, 32, (7, 7), (3, 3), quick=True),
    swin_case("swin w7 s3 10x9 pad_roll", 1, 10, 9, 1, 32, (7, 7), (3, 3), "pad_roll", quick=True),
    swin_case("swin w7 s0 14x14 b2", 2, 14, 14, 1, 32, (7, 7)),
    swin_case("swin w7 s3 14x14 b2", 2, 14, 14, 1, 16, (7, 7), (3, 3)),
    swin_case("swin w7 shrunk 7x7", 2, 7, 7, 1, 32, (7, 7)),
    swin_case("swin w8 s4 12x12 d64", 1, 12, 12, 1, 64, (8, 8), (4, 4), "pad_roll"),
    swin_case("swin w4x8 s2x4 8x10", 1, 8, 10, 1, 32, (4, 8), (2, 4), "pad_roll"),
    swin_case("swin w12 s6 14x14", 1, 14, 14, 1, 16, (12, 12), (6, 6)),
    swin_case("swin w7 s3 map smaller than window", 1, 5, 3, 1, 16, (7, 7), (3, 3), "pad_roll"),
    swin_case("swin w7 s3 no table", 1, 10, 9, 1, 32, (7, 7), (3, 3), table=False, scale=0.3),
    swin_case("swin w7 s3 no qkv_bias", 1, 10, 9, 1, 32, (7, 7), (3, 3), "pad_roll", qkv_bias=False),
    swin_case("swin w7 s3 strided qkv", 1, 10, 9, 1, 32, (7, 7), (3, 3), "pad_roll", layout="strided"),
    swin_case("swin w2x1 saturated softmax", 1, 4, 3, 1, 16, (2, 1), (1, 0), scale=0.3, qkv_scale=3.0),
    # geometry edge cases: shift larger than the map, one pixel, rectangular windows
    swin_case("swin w12 s6 on 5x5 roll_pad", 2, 5, 5, 2, 16, (12, 12), (6, 6)),
    swin_case("swin w12 s6 on 5x5 pad_roll", 2, 5, 5, 2, 16, (12, 12), (6, 6), "pad_roll"),
    swin_case("swin w8 s4 on 3x7", 2, 3, 7, 2, 16, (8, 8), (4, 4)),
    swin_case("swin w7 s3 on 1x1", 2, 1, 1, 2, 16, (7, 7), (3, 3)),
    swin_case("swin w4 s2 on 1x9 pad_roll", 2, 1, 9, 2, 16, (4, 4), (2, 2), "pad_roll"),
    swin_case("swin w3x5 s1x2 on 6x10", 2, 6, 10, 2, 16, (3, 5), (1, 2)),
    swin_case("swin w7 s0 9x9 pad_roll", 2, 9, 9, 2, 16, (7, 7), (0, 0), "pad_roll"),
    # Swin V2 cosine attention (per-head logit scales up to 100: saturated softmaxes)
    swin_case("swin v2 cosine w4 s2 9x11 pad_roll", 1, 9, 11, 2, 16, (4, 4), (2, 2), "pad_roll", cosine=True),
    swin_case("swin v2 cosine w6x8 s0x4 6x10", 1, 6, 10, 2, 16, (6, 8), (0, 4), cosine=True),
    window_case("windows v2 cosine w4 mask", 2, 2, 2, 16, (4, 4), cosine=True),
    # given windows: with / without a (differentiable) mask, -inf rows, no table
    window_case("windows w7 mask", 2, 2, 1, 32, (7, 7), quick=True),
    window_case("windows w7 no mask", 2, 2, 2, 16, (7, 7), mask=None),
    window_case("windows w4 constant mask", 3, 1, 2, 16, (4, 4), mask_grad=False, layout="transposed"),
    window_case("windows w4 -inf rows", 2, 1, 1, 16, (4, 4), mask=_row_of_neg_inf, mask_grad=False, table=False),
    # global attention: a partial last block, several blocks
    attention_case("attention N=50", 2, 50, 2, 32, quick=True),
    attention_case("attention N=77 d64", 1, 77, 1, 64),
    attention_case("attention N=130 d16", 1, 130, 2, 16, scale=0.2),
    # depthwise conv: k 3/5/7, NCHW / channels-last / NHWC, residual, bias
    dwconv_case("dwconv k3 residual", 2, 8, 9, 7, 3, residual=True, quick=True),
    dwconv_case("dwconv k5 channels_last", 2, 8, 9, 7, 5, memory="channels_last", quick=True),
    dwconv_case("dwconv k7 NHWC no bias", 1, 6, 8, 9, 7, "NHWC", bias=False),
    dwconv_case("dwconv k3 NHWC residual", 1, 5, 6, 4, 3, "NHWC", residual=True),
    dwconv_case("dwconv k7 channels_last residual map < kernel", 2, 10, 5, 3, 7, memory="channels_last",
                residual=True),
    dwconv_case("dwconv k5 NHWC odd map", 2, 10, 13, 11, 5, "NHWC"),
    dwconv_case("dwconv k5 strided residual", 2, 10, 9, 9, 5, memory="strided", residual=True, bias=False),
    dwconv_layernorm_case("dwconv+LN k3", 2, 8, 5, 6, quick=True),
    dwconv_layernorm_case("dwconv+LN k3 NHWC", 1, 16, 4, 5, layout="NHWC"),
    dwconv_layernorm_case("dwconv+LN k5 channels_last", 1, 10, 7, 7, 5, memory="channels_last"),
    dwconv_layernorm_case("dwconv+LN k7 odd map", 2, 10, 9, 5, 7),
    # MLP first half: Linear + GELU (erf and tanh forms), token maps and flat rows
    linear_gelu_case("linear+gelu [2, 7, 9, 40] -> 70", (2, 7, 9, 40), 70, quick=True),
    linear_gelu_case("linear+gelu tanh no bias", (5, 33), 64, bias=False, approximate="tanh"),
    linear_gelu_case("linear+gelu strided x", (3, 6, 24), 48, layout="strided"),
    # projections with the block's residual add; 1x1 convs (UniFormer) with GELU or the add
    linear_case("linear + residual [2, 5, 7, 24] -> 40", (2, 5, 7, 24), 40, residual=True, quick=True),
    linear_case("linear no bias strided x", (6, 32), 16, bias=False, layout="strided"),
    conv1x1_case("conv1x1 + gelu", 2, 12, 5, 6, 20, gelu="none", quick=True),
    conv1x1_case("conv1x1 + residual channels_last", 2, 12, 5, 6, 12, residual=True, memory="channels_last"),
    conv1x1_case("conv1x1 gelu tanh", 1, 8, 3, 7, 16, gelu="tanh"),
)


# -------------------------------------------------------------------------------------------- the runner

@dataclasses.dataclass
class Result:
    """The outcome of one (case, backend, dtype)."""

    case: str
    backend: str
    dtype: torch.dtype
    ran_on: List[str] = dataclasses.field(default_factory=list)  # backends the op really used
    errors: Dict[str, Tuple[float, float]] = dataclasses.field(default_factory=dict)  # name -> (err, bound)
    grads_fast: Tuple[str, ...] = ()
    grads_ref: Tuple[str, ...] = ()

    @property
    def failures(self) -> List[str]:
        bad = [f"{name}: max error {err:.3e} > bound {b:.3e}" for name, (err, b) in self.errors.items()
               if not err <= b]
        if self.grads_fast != self.grads_ref:
            bad.append(f"gradients for {self.grads_fast}, the reference for {self.grads_ref}")
        if any(name != self.backend for name in self.ran_on):
            bad.append(f"ran on {self.ran_on}, not {self.backend}")
        return bad

    @property
    def ok(self) -> bool:
        return not self.failures

    def worst(self, prefix: str) -> Tuple[float, float]:
        """(largest error, its bound) over the results whose name starts with `prefix`."""
        rows = [v for k, v in self.errors.items() if k.startswith(prefix)]
        return max(rows, key=lambda r: r[0] / r[1] if r[1] else r[0]) if rows else (float("nan"), float("nan"))


def _forward_backward(case: Case, tensors, backend: str, cotangents=None):
    leaves = [None if t is None else t.detach().clone().requires_grad_(spec.grad)
              for t, spec in zip(tensors, case.inputs)]
    with dispatch.set_backend(backend, strict=True), dispatch.record() as ran:
        out = case.fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    if cotangents is None:
        cotangents = [torch.randn(o.shape, dtype=torch.float64) for o in outs]
    wanted = [(spec.name, leaf) for spec, leaf in zip(case.inputs, leaves) if leaf is not None and spec.grad]
    grads = torch.autograd.grad(outs, [leaf for _, leaf in wanted], [c.to(o) for c, o in zip(cotangents, outs)],
                                allow_unused=True)
    grads = {name: g for (name, _), g in zip(wanted, grads) if g is not None}
    return outs, grads, cotangents, [name for _, name in ran]


def supported(case: Case, backend: str, device, dtype) -> Optional[str]:
    """None when `backend` takes this case here, else why not (the dispatcher's own reason)."""
    if dtype not in case.dtypes:
        return f"{dtype} is not part of this case"
    if backend == "reference":
        return None
    call = case.describe(case.make(device, dtype))
    return dispatch.why_not(backend, call._replace(requires_grad=True))


@dataclasses.dataclass
class Reference:
    """A case's inputs in one dtype, its cotangents, and the reference's results on them, in that dtype
    (`low`) and in fp64 (`exact`): what every backend of that (case, dtype) is compared with."""

    tensors: List[Optional[torch.Tensor]]
    cotangents: List[torch.Tensor]
    low: Tuple[Tuple[torch.Tensor, ...], Dict[str, torch.Tensor]]
    exact: Tuple[Tuple[torch.Tensor, ...], Dict[str, torch.Tensor]]


def reference_run(case: Case, dtype: torch.dtype, device="cpu") -> Reference:
    """Draw the case's inputs in `dtype` and run the reference on them, in `dtype` and in fp64."""
    tensors = case.make(device, dtype)
    low, low_g, cot, _ = _forward_backward(case, tensors, "reference")
    exact_in = [None if t is None else t.double() for t in tensors]
    exact, exact_g, _, _ = _forward_backward(case, exact_in, "reference", cot)
    return Reference(tensors, cot, (low, low_g), (exact, exact_g))


def run_case(case: Case, backend: str, dtype: torch.dtype, device="cpu",
             reference: Optional[Reference] = None) -> Result:
    """Compare `backend` with the reference on `case` (see the module docstring); `reference`: a
    `reference_run` of this case and dtype to reuse (several backends, one reference), else a fresh one."""
    ref = reference if reference is not None else reference_run(case, dtype, device)
    fast, fast_g, _, ran = _forward_backward(case, ref.tensors, backend, ref.cotangents)
    (low, low_g), (exact, exact_g) = ref.low, ref.exact
    res = Result(case.name, backend, dtype, ran, grads_fast=tuple(sorted(fast_g)), grads_ref=tuple(sorted(exact_g)))
    for i, (f, lo, ex) in enumerate(zip(fast, low, exact)):
        res.errors[f"output {i}" if len(fast) > 1 else "output"] = (_finite_err(f, ex), bound(lo, ex, dtype))
    for name in exact_g:
        if name in fast_g:
            res.errors[f"grad {name}"] = (_finite_err(fast_g[name], exact_g[name]),
                                          bound(low_g.get(name, torch.zeros_like(fast_g[name])), exact_g[name], dtype))
    return res


def _finite_err(fast: torch.Tensor, exact: torch.Tensor) -> float:
    """max |fast - exact|, inf where fast has a NaN/inf that exact does not."""
    if fast.shape != exact.shape:
        return float("inf")
    bad = ~torch.isfinite(fast) & torch.isfinite(exact)
    return float("inf") if bad.any() else max_err(torch.nan_to_num(fast), torch.nan_to_num(exact))


def device_dtypes(device) -> List[torch.dtype]:
    """The dtypes worth checking on `device` (bf16 needs sm_80 on CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        return [torch.float32, torch.float16] + ([torch.bfloat16] if torch.cuda.is_bf16_supported() else [])
    return [torch.float32, torch.float16, torch.bfloat16]


def select_cases(quick: bool = False) -> Sequence[Case]:
    return [c for c in CASES if c.quick] if quick else CASES
