"""The op contract: one row per op, from which every table of ops in fastwin is derived.

A row (`Op`) is an op's single definition: its name, its call descriptor type (`Call`), its reference
implementation, and, for fused ops, the schema of its compiled forms in both namespaces (`fastwin::`
Triton, `fastwin_C::` C++/CUDA, STYLE.md):

    <op>_fwd(inputs..., attributes...) -> (results...)   the first `outputs` results are
                                                          differentiable, the rest are statistics
    <op>_bwd(grads of the outputs..., saved results..., inputs..., attributes..., bool[n] needs_grad)
        -> one gradient per differentiable input ([0]-sized where not needed, or where the input does
           not affect the outputs: autograd then reports None, as for the reference)

The reference takes the schema's arguments in the schema's order, then the arguments only the
reference implements (`dropout_p`, `logit_scale`); `fastwin.ops` builds exactly that argument list,
so an op's arguments travel from the public function to the kernel launcher in one order.

Derived from `OPS`: the dispatcher's op list, the reference backend's table, the compiled backends'
entry points (`backend/compiled.py`), the autograd of every `<op>_fwd` (`backend/library.py`, both
namespaces), the C++ ops' fakes (`backend/cpp_ops.py`), the Triton ops (`backend/triton_ops.py`,
whose schemas are `Op.fwd_schema` / `Op.bwd_schema`), `fastwin.ops.describe` and the test samples.
The C++ schemas (csrc/) are checked against the rows by the test suite.

This module is the lowest floor of the package: it imports torch and the reference only.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Dict, NamedTuple, Optional, Tuple, Union

import torch
import torch.autograd.forward_ad as fwAD

from . import reference as ref

__all__ = ["AttentionCall", "Call", "ConvCall", "FUSED", "LinearCall", "OPS", "Op", "WindowAttentionCall",
           "transforming"]


# --------------------------------------------------------------------------------------- call descriptors
# Typed, immutable, hashable descriptions of one op call. NamedTuples rather than frozen dataclasses:
# building one is on every op call's path, and a tuple builds ~5x faster. Every kind starts with the
# four fields every backend reads: op, device_type, dtype, requires_grad (grad mode on and some
# differentiable input requires grad).


class WindowAttentionCall(NamedTuple):
    """`shifted_window_attention` (a map, `has_qkv_bias`, shift, pad order) or `window_attention`
    (given windows, `has_mask`)."""

    op: str
    device_type: str
    dtype: torch.dtype
    requires_grad: bool
    num_heads: int = 1
    head_dim: int = 0
    window_size: Tuple[int, int] = (1, 1)
    shift_size: Tuple[int, int] = (0, 0)
    pad_order: str = "roll_pad"
    dropout_p: float = 0.0
    has_table: bool = False
    has_qkv_bias: bool = False
    has_mask: bool = False
    cosine: bool = False  # Swin V2 cosine attention (a per-head logit scale instead of `scale`)


class AttentionCall(NamedTuple):
    """Global attention over `seq_len` tokens."""

    op: str
    device_type: str
    dtype: torch.dtype
    requires_grad: bool
    num_heads: int = 1
    head_dim: int = 0
    seq_len: int = 0
    dropout_p: float = 0.0


class ConvCall(NamedTuple):
    """`dwconv2d` and `dwconv_layernorm`."""

    op: str
    device_type: str
    dtype: torch.dtype
    requires_grad: bool
    kernel_size: int = 3
    channels: int = 0
    layout: str = "NCHW"  # how x is indexed ("NCHW" or "NHWC"), not its memory format
    channels_last: bool = False  # channels are the fastest-moving dimension in memory
    residual: bool = False
    has_bias: bool = False


class LinearCall(NamedTuple):
    """`linear_gelu`: x [..., in_features] @ weight^T + bias, then GELU; `linear`: the projection plus an
    optional residual; `conv1x1`: the same over the channels of an NCHW map (GELU form or None)."""

    op: str
    device_type: str
    dtype: torch.dtype
    requires_grad: bool
    in_features: int = 0
    out_features: int = 0
    approximate: Optional[str] = "none"
    has_bias: bool = False
    residual: bool = False


Call = Union[WindowAttentionCall, AttentionCall, ConvCall, LinearCall]
ATTENTION_CALLS = (WindowAttentionCall, AttentionCall)  # the calls whose kernels have a head dim and tokens


# ------------------------------------------------------------------------------------------------ the row

def _parse(signature: str) -> Tuple[Tuple[str, str], ...]:
    """"Tensor x, int[2] k" -> (("Tensor", "x"), ("int[2]", "k"))."""
    return tuple(tuple(arg.strip().rsplit(" ", 1)) for arg in signature.split(","))


@dataclasses.dataclass(frozen=True)
class Op:
    """One op's single definition (see the module docstring).

    Fields past `reference` describe the compiled `<op>_fwd / _bwd` pair; an op without a `signature`
    (a projection that every backend runs as torch's GEMM) has none.
    """

    name: str
    call: type  # its `Call` type
    reference: Callable  # (schema arguments..., reference-only arguments...) -> outputs
    signature: Optional[str] = None  # "<type> <name>, ..." of <op>_fwd's arguments, tensors first
    results: Tuple[str, ...] = ()  # names of <op>_fwd's results
    outputs: int = 1  # the first `outputs` results are differentiable
    differentiable: Tuple[str, ...] = ()  # inputs that get gradients, in the order <op>_bwd returns them
    saved: Tuple[str, ...] = ()  # the results <op>_bwd takes, in order
    fake: Optional[Callable] = None  # <op>_fwd's output metadata in the C++ namespace; None: no C++ form
    fake_bwd: Optional[Callable] = None  # <op>_bwd's; default: each needed input's shape, else [0]

    @property
    def args(self) -> Tuple[Tuple[str, str], ...]:
        return _parse(self.signature) if self.signature else ()

    @property
    def inputs(self) -> Tuple[str, ...]:
        """The leading tensor arguments of <op>_fwd, in order."""
        return tuple(name for kind, name in self.args if kind.startswith("Tensor"))

    @property
    def n_args(self) -> int:
        """How many of the reference's arguments the schema has (the rest are reference-only)."""
        return len(self.args)

    @property
    def extras(self) -> Tuple[str, ...]:
        """The reference's arguments past the schema's (only the reference implements them)."""
        return tuple(inspect.signature(self.reference).parameters)[self.n_args:]

    @property
    def saved_at(self) -> Tuple[int, ...]:
        return tuple(self.results.index(r) for r in self.saved)

    def index(self, name: str) -> int:
        return self.inputs.index(name)

    @property
    def fwd_schema(self) -> str:
        """`(arguments) -> results` of <op>_fwd (without the name, as torch.library takes it)."""
        return f"({self.signature}) -> {_returns(len(self.results))}"

    @property
    def bwd_schema(self) -> str:
        grads = [f"Tensor grad_{r}" for r in self.results[:self.outputs]]
        saved = [f"Tensor {r}" for r in self.saved]
        needs = f"bool[{len(self.differentiable)}] needs_grad"
        return f"({', '.join(grads + saved + [self.signature, needs])}) -> {_returns(len(self.differentiable))}"


def _returns(n: int) -> str:
    return "Tensor" if n == 1 else "(" + ", ".join(["Tensor"] * n) + ")"


# ------------------------------------------------------------------------------------ fakes (C++ results)
# The C++ kernels' statistics: lse [groups, heads, N] (fp64 for fp64 inputs, else fp32).

def _stat_dtype(t):
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _ceil_to(x, m):
    return (x + m - 1) // m * m


def _grad_like(t, need, like):
    """A gradient's fake: t's shape where requested and t exists, else the [0]-sized placeholder."""
    return (t.new_empty(t.shape) if (t is not None and need) else torch.empty(0)).to(like)


def _conv_format(x):
    """The memory format the conv kernels produce for input x (mirrors csrc/*/dwconv*)."""
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def _shifted_fake(qkv, table, qkv_bias, num_heads, window_size, shift_size, scale, pad_roll):
    B, H, W, C3 = qkv.shape
    wh, ww = window_size
    groups = B * (_ceil_to(H, wh) // wh) * (_ceil_to(W, ww) // ww)
    return qkv.new_empty((B, H, W, C3 // 3)), qkv.new_empty((groups, num_heads, wh * ww), dtype=_stat_dtype(qkv))


def _attention_fake(qkv, num_heads, scale):
    B_, N, C3 = qkv.shape
    return qkv.new_empty((B_, N, C3 // 3)), qkv.new_empty((B_, num_heads, N), dtype=_stat_dtype(qkv))


def _windows_fake(qkv, table, mask, num_heads, window_size, scale):
    return _attention_fake(qkv, num_heads, scale)


def _attention_bwd_fake(*args):
    """dqkv always; the other inputs' gradients where asked for (args: grad_out, out, lse, qkv, ...)."""
    qkv, others, needs = args[3], args[4:-1], args[-1]
    grads = [_grad_like(t, need, qkv) for t, need in zip(others, needs[1:])]
    return qkv.new_empty(qkv.shape) if not grads else (qkv.new_empty(qkv.shape), *grads)


def _dwconv2d_fake(x, weight, bias, residual, layout):
    xl = x.permute(0, 3, 1, 2) if layout == "NHWC" else x
    y = torch.empty_like(xl, memory_format=_conv_format(xl))
    return y.permute(0, 2, 3, 1) if layout == "NHWC" else y


def _dwconv2d_bwd_fake(grad_out, x, weight, bias, residual, layout, needs):
    gl = grad_out.permute(0, 3, 1, 2) if layout == "NHWC" else grad_out
    dx = torch.empty_like(gl, memory_format=_conv_format(gl))
    dx = dx.permute(0, 2, 3, 1) if layout == "NHWC" else dx
    return dx, _grad_like(weight, needs[1], x), _grad_like(bias, needs[2], x)


def _linear_gelu_fake(x, weight, bias, approximate, save_preact):
    shape = (*x.shape[:-1], weight.shape[0])
    return x.new_empty(shape), x.new_empty(shape if save_preact else (0,))


# ------------------------------------------------------------------------------------------------ the rows

_ATTN = ("qkv", "rel_pos_bias_table")
OPS: Dict[str, Op] = {op.name: op for op in (
    Op("shifted_window_attention", WindowAttentionCall, ref.shifted_window_attention_ref,
       "Tensor qkv, Tensor? rel_pos_bias_table, Tensor? qkv_bias, int num_heads, int[2] window_size, "
       "int[2] shift_size, float scale, bool pad_roll",
       ("out", "lse"), 1, _ATTN + ("qkv_bias",), ("out", "lse"), _shifted_fake, _attention_bwd_fake),
    Op("window_attention", WindowAttentionCall, ref.window_attention_ref,
       "Tensor qkv, Tensor? rel_pos_bias_table, Tensor? mask, int num_heads, int[2] window_size, float scale",
       ("out", "lse"), 1, _ATTN + ("mask",), ("out", "lse"), _windows_fake, _attention_bwd_fake),
    Op("attention", AttentionCall, ref.attention_ref, "Tensor qkv, int num_heads, float scale",
       ("out", "lse"), 1, ("qkv",), ("out", "lse"), _attention_fake, _attention_bwd_fake),
    Op("dwconv2d", ConvCall, ref.dwconv2d_ref, "Tensor x, Tensor weight, Tensor? bias, bool residual, str layout",
       ("out",), 1, ("x", "weight", "bias"), (), _dwconv2d_fake, _dwconv2d_bwd_fake),
    Op("dwconv_layernorm", ConvCall, ref.dwconv_layernorm_ref,  # Triton only: no C++ fakes needed
       "Tensor x, Tensor weight, Tensor? bias, Tensor? ln_weight, Tensor? ln_bias, float eps, str layout",
       ("tokens", "normed", "mean", "rstd"), 2, ("x", "weight", "bias", "ln_weight", "ln_bias"),
       ("tokens", "mean", "rstd")),
    Op("linear_gelu", LinearCall, ref.linear_gelu_ref,  # the pre-activation is saved only when asked for
       "Tensor x, Tensor weight, Tensor? bias, str approximate, bool save_preact",
       ("out", "preact"), 1, ("x", "weight", "bias"), ("preact",), _linear_gelu_fake),
    Op("linear", LinearCall, ref.linear_ref),
    Op("conv1x1", LinearCall, ref.conv1x1_ref),
)}
FUSED: Tuple[Op, ...] = tuple(op for op in OPS.values() if op.signature)  # the ops with compiled forms
CPP: Tuple[Op, ...] = tuple(op for op in FUSED if op.fake is not None)  # ... in the C++ namespace


def default_fake_bwd(op: Op) -> Callable:
    """<op>_bwd's fake when the row gives none: each needed input's shape (its first input's dtype)."""
    n_lead = op.outputs + len(op.saved)
    at = [op.index(n) for n in op.differentiable]

    def fake(*args):
        inputs, needs = args[n_lead:n_lead + len(op.inputs)], args[-1]
        grads = [_grad_like(inputs[i], need, inputs[0]) for i, need in zip(at, needs)]
        return grads[0] if len(grads) == 1 else tuple(grads)

    return fake


def transforming() -> bool:
    """A torch.func transform (grad, jvp, vmap, ...) or a `torch.autograd.forward_ad` level is active
    (never while torch.compile traces: it takes the ops' registered autograd)."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._functorch.peek_interpreter_stack() is not None or fwAD._current_level >= 0
