"""The one autograd definition of every compiled op, derived from its contract row.

Each fused op exists once per backend namespace (`fastwin::` for Triton, `fastwin_C::` for the C++
extension) with the schemas of its row in `fastwin.contract` (which also says which inputs are
differentiable, how many results are differentiable outputs and which results the backward takes).
`register_autograd(namespace)` turns the rows into the autograd formula of every `<op>_fwd` in a
namespace, so all backends differentiate the same inputs and honour `ctx.needs_input_grad` the same way.

Double backward (`create_graph=True`: gradient penalties, Hessian-vector products) is computed by
differentiating the row's reference implementation on the saved inputs, so it is exact on every
backend; the `_bwd` ops themselves raise a clear error if something differentiates through them
directly (never silent zeros).

Forward mode and `torch.func` transforms (`jvp`, `grad`, `jacrev`, `vmap`, `torch.autograd.forward_ad`)
cannot go through a `torch.library` autograd registration (it has no jvp rule, so forward mode would
give no tangent, and functorch rejects its generated autograd.Function). `forward(namespace)` therefore
runs an op through a `torch.autograd.Function` built from the same row (`setup_context`, the same
backward, a jvp rule that differentiates the reference in forward mode, a generated vmap rule) whenever
such a transform is active, and calls the op directly otherwise (inference, plain autograd, torch.compile).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.autograd.forward_ad as fwAD

from ..contract import FUSED, OPS, Op, transforming

__all__ = ["forward", "has_op", "register_autograd", "transforming"]


def has_op(namespace: str, name: str) -> bool:
    """`namespace::name` is a registered op (a schema or a kernel)."""
    try:
        return torch._C._dispatch_has_kernel(f"{namespace}::{name}") or bool(
            torch._C._jit_get_schemas_for_operator(f"{namespace}::{name}"))
    except RuntimeError:
        return False


def _reference_on(spec: Op, inputs, attrs, at):
    """f(*moving): the reference's differentiable outputs with inputs[at] replaced by `moving`."""
    def reference(*moving):
        full = list(inputs)
        for i, x in zip(at, moving):
            full[i] = x
        got = spec.reference(*full, *attrs)
        return got if isinstance(got, tuple) else (got,)

    return reference


def _reference_grads(spec: Op, inputs, attrs, grads, needs):
    """Differentiable gradients (create_graph=True) from the reference implementation.

    `torch.func.vjp` rather than `torch.autograd.grad`: it composes with the torch.func transforms
    that may be running this backward (jacrev vmaps it over batched cotangents).
    """
    at = [spec.index(n) for n, need in zip(spec.differentiable, needs) if need]
    with torch.enable_grad():
        outs, vjp = torch.func.vjp(_reference_on(spec, inputs, attrs, at), *[inputs[i] for i in at])
        got = iter(vjp(tuple(torch.zeros_like(o) if g is None else g for o, g in zip(outs, grads))))
    return [next(got) if need else None for need in needs]


def _make_autograd(spec: Op, bwd: Callable):
    n_in = len(spec.inputs)
    diff_at = [spec.index(n) for n in spec.differentiable]
    saved_at = spec.saved_at

    def setup_context(ctx, inputs, output):
        results = output if isinstance(output, tuple) else (output,)
        ctx.save_for_backward(*inputs[:n_in], *(results[i] for i in saved_at))
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


def _reference_jvp(spec: Op, inputs, attrs, tangents):
    """Tangents of the differentiable outputs: the reference differentiated in forward mode."""
    at = [i for i, (x, t) in enumerate(zip(inputs, tangents)) if x is not None and t is not None]
    reference = _reference_on(spec, inputs, attrs, at)
    primals, tangents = tuple(inputs[i] for i in at), tuple(tangents[i] for i in at)
    if not at:
        return tuple(torch.zeros_like(o) for o in reference(*primals))
    if fwAD._current_level < 0:
        return torch.func.jvp(reference, primals, tangents)[1]
    # inside `torch.autograd.forward_ad`, which cannot nest: J t as the vjp of the (linear) vjp map
    outs, vjp = torch.func.vjp(reference, *primals)
    _, vjp_of_vjp = torch.func.vjp(vjp, tuple(torch.zeros_like(o) for o in outs))
    return vjp_of_vjp(tangents)[0]


def _make_function(spec: Op, fwd: Callable, bwd: Callable) -> type:
    """The op as a `torch.autograd.Function` that torch.func transforms and forward mode accept."""
    n_in = len(spec.inputs)
    setup_backward, backward = _make_autograd(spec, bwd)

    def forward(*args):
        return fwd(*args)

    def setup_context(ctx, inputs, output):
        setup_backward(ctx, inputs, output)
        ctx.save_for_forward(*inputs[:n_in])
        ctx.results = len(output) if isinstance(output, tuple) else 0  # 0: a single tensor

    def jvp(ctx, *tangents):
        outs = _reference_jvp(spec, ctx.saved_tensors[:n_in], ctx.attrs, tangents[:n_in])
        if not ctx.results:
            return outs[0]
        return (*outs, *[None] * (ctx.results - spec.outputs))  # statistics: not differentiable

    return type(f"{spec.name}_function", (torch.autograd.Function,), {
        "forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward), "jvp": staticmethod(jvp), "generate_vmap_rule": True})


def forward(namespace: str) -> Callable:
    """`run(op, *args)`: `torch.ops.<namespace>.<op>_fwd(*args)`, differentiable under every transform.

    Under a torch.func transform or forward-mode AD the call goes through the op's autograd.Function
    (see the module docstring); otherwise it calls the op directly, whose autograd is the
    `register_autograd` registration of the same backward.
    """
    ops = getattr(torch.ops, namespace)
    functions: Dict[str, type] = {}

    def run(op: str, *args):
        fwd = getattr(ops, f"{op}_fwd")
        if not transforming():
            return fwd(*args)
        if op not in functions:
            functions[op] = _make_function(OPS[op], fwd, getattr(ops, f"{op}_bwd"))
        return functions[op].apply(*args)

    return run


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
    for spec in FUSED:
        fwd, bwd = f"{spec.name}_fwd", f"{spec.name}_bwd"
        if not (has_op(namespace, fwd) and has_op(namespace, bwd)):
            continue
        bwd_op = getattr(ops, bwd)
        setup_context, backward = _make_autograd(spec, bwd_op)
        torch.library.register_autograd(f"{namespace}::{fwd}", backward, setup_context=setup_context)
        torch.library.register_autograd(f"{namespace}::{bwd}", _refuse_double_backward(f"{namespace}::{bwd}"),
                                        setup_context=lambda ctx, inputs, output: None)
        done.append(spec.name)
    return tuple(done)
