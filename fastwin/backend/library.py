"""The op contract every compiled backend implements, and its one autograd definition.

Each fused op exists once per backend namespace (`fastwin::` for Triton, `fastwin_C::` for the C++
extension) with the same names and argument order (STYLE.md):

    <op>_fwd(inputs..., attributes...) -> (outputs..., statistics...)
    <op>_bwd(grads of the outputs..., saved results..., inputs..., attributes..., bool[] needs_grad)
        -> one gradient per differentiable input (a [0]-sized tensor where not needed, or where the
           input does not affect the outputs: autograd then reports None, as for the reference)

`SPECS` says, per op, which inputs are tensors, which of them are differentiable, how many results
are differentiable outputs and which results the backward takes. `register_autograd(namespace)`
turns that table into the autograd formula of every `<op>_fwd` in a namespace, so all backends
differentiate the same inputs and honour `ctx.needs_input_grad` the same way.

Double backward (`create_graph=True`: gradient penalties, Hessian-vector products) is computed by
differentiating the reference implementation (`SPECS[op].reference`) on the saved inputs, so it is
exact on every backend; the `_bwd` ops themselves raise a clear error if something differentiates
through them directly (never silent zeros).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .. import reference as ref

__all__ = ["OpSpec", "SPECS", "register_autograd"]


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One fused op's contract (see the module docstring for the schema shapes)."""

    name: str
    inputs: Tuple[str, ...]  # the leading tensor arguments of <op>_fwd, in order
    differentiable: Tuple[str, ...]  # inputs that get gradients, in the order <op>_bwd returns them
    outputs: int  # the first `outputs` results are differentiable; the rest are statistics
    saved: Tuple[int, ...]  # indices of the forward results that <op>_bwd takes, in order
    reference: Callable  # (inputs..., attributes...) -> tuple of the differentiable outputs

    def index(self, name: str) -> int:
        return self.inputs.index(name)


def _pad_order(pad_roll: bool) -> str:
    return "pad_roll" if pad_roll else "roll_pad"


SPECS: Dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        OpSpec(
            "shifted_window_attention", ("qkv", "rel_pos_bias_table", "qkv_bias"),
            ("qkv", "rel_pos_bias_table", "qkv_bias"), 1, (0, 1),
            lambda qkv, table, qkv_bias, heads, window, shift, scale, pad_roll: (
                ref.shifted_window_attention_ref(qkv, heads, tuple(window), tuple(shift), table, qkv_bias, scale,
                                                 _pad_order(pad_roll)),)),
        OpSpec(
            "window_attention", ("qkv", "rel_pos_bias_table", "mask"), ("qkv", "rel_pos_bias_table", "mask"), 1,
            (0, 1),
            lambda qkv, table, mask, heads, window, scale: (
                ref.window_attention_ref(qkv, heads, tuple(window), table, mask, scale),)),
        OpSpec(
            "attention", ("qkv",), ("qkv",), 1, (0, 1),
            lambda qkv, heads, scale: (ref.attention_ref(qkv, heads, scale),)),
        OpSpec(
            "dwconv2d", ("x", "weight", "bias"), ("x", "weight", "bias"), 1, (),
            lambda x, weight, bias, residual, layout: (ref.dwconv2d_ref(x, weight, bias, residual, layout),)),
        OpSpec(
            "dwconv_layernorm", ("x", "weight", "bias", "ln_weight", "ln_bias"),
            ("x", "weight", "bias", "ln_weight", "ln_bias"), 2, (0, 2, 3),
            lambda x, weight, bias, ln_weight, ln_bias, eps, layout: ref.dwconv_layernorm_ref(
                x, weight, bias, ln_weight, ln_bias, eps, layout)),
        OpSpec(  # results (out, preact): the pre-activation is saved only when autograd will need it
            "linear_gelu", ("x", "weight", "bias"), ("x", "weight", "bias"), 1, (1,),
            lambda x, weight, bias, approximate, save_preact: (ref.linear_gelu_ref(x, weight, bias, approximate),)),
    )
}


def _has_op(namespace: str, name: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel(f"{namespace}::{name}") or bool(
            torch._C._jit_get_schemas_for_operator(f"{namespace}::{name}"))
    except RuntimeError:
        return False


def _reference_grads(spec: OpSpec, inputs, attrs, grads, needs):
    """Differentiable gradients (create_graph=True) from the reference implementation."""
    wanted = [inputs[spec.index(n)] for n, need in zip(spec.differentiable, needs) if need]
    # SDPA's fused CPU/GPU kernels have no double backward; its math path is plain differentiable ops
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        outs = spec.reference(*inputs, *attrs)
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None]
        got = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], create_graph=True,
                                       allow_unused=True))
    return [next(got) if need else None for need in needs]


def _make_autograd(spec: OpSpec, bwd: Callable):
    n_in = len(spec.inputs)
    diff_at = [spec.index(n) for n in spec.differentiable]

    def setup_context(ctx, inputs, output):
        results = output if isinstance(output, tuple) else (output,)
        ctx.save_for_backward(*inputs[:n_in], *(results[i] for i in spec.saved))
        ctx.attrs = tuple(inputs[n_in:])
        if len(results) > spec.outputs:
            ctx.mark_non_differentiable(*results[spec.outputs:])

    def backward(ctx, *grads):
        grads = grads[:spec.outputs]
        saved = ctx.saved_tensors
        inputs, results = saved[:n_in], saved[n_in:]
        needs = [bool(ctx.needs_input_grad[i]) for i in diff_at]
        double = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (*inputs, *grads))
        if double:  # create_graph=True: the kernels' gradients are not differentiable, the reference's are
            got = _reference_grads(spec, inputs, ctx.attrs, grads, needs)
        else:
            got = bwd(*grads, *results, *inputs, *ctx.attrs, needs)
            got = got if isinstance(got, (tuple, list)) else (got,)
        out = [None] * (n_in + len(ctx.attrs))
        for i, need, g in zip(diff_at, needs, got):
            # a [0]-sized gradient of a non-empty input: the input does not affect the outputs (None, as
            # the reference's autograd gives, e.g. qkv_bias of an unpadded map)
            if need and g is not None and (g.numel() or not inputs[i].numel()):
                out[i] = g
        return tuple(out)

    return setup_context, backward


def _refuse_double_backward(qualname: str):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"{qualname} cannot be differentiated (it is a backward kernel); differentiate the fastwin op "
            "itself with create_graph=True, which recomputes the gradient through the reference")

    return backward


def register_autograd(namespace: str, ops: Optional[object] = None) -> Tuple[str, ...]:
    """Register the autograd formula of every `<op>_fwd` that exists in `namespace`.

    Returns the names of the ops registered. Safe to call once per namespace (torch.library keeps
    the last registration).
    """
    ops = ops if ops is not None else getattr(torch.ops, namespace)
    done = []
    for spec in SPECS.values():
        fwd, bwd = f"{spec.name}_fwd", f"{spec.name}_bwd"
        if not (_has_op(namespace, fwd) and _has_op(namespace, bwd)):
            continue
        bwd_op = getattr(ops, bwd)
        setup_context, backward = _make_autograd(spec, bwd_op)
        torch.library.register_autograd(f"{namespace}::{fwd}", backward, setup_context=setup_context)
        torch.library.register_autograd(f"{namespace}::{bwd}", _refuse_double_backward(f"{namespace}::{bwd}"),
                                        setup_context=lambda ctx, inputs, output: None)
        done.append(spec.name)
    return tuple(done)
