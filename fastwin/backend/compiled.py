"""Reference-signature entry points over a namespace of compiled ops (`fastwin::` Triton,
`fastwin_C::` C++/CUDA), shared by the triton, cpp and cuda backends.

Arguments arrive validated and normalized by `fastwin.ops`, in the order of the op's contract row
(`fastwin.contract`): the schema's arguments, then the reference-only ones. An entry point passes the
schema's arguments to `torch.ops.<namespace>.<op>_fwd` unchanged and returns the op's outputs without
the statistics the backward keeps; autograd is the shared definition in `fastwin.backend.library`.
Of the reference-only arguments, a Swin V2 `logit_scale` is lowered onto the same kernel
(`cosine.cosine_as_dot`); `dropout_p` is refused by the backends' `supports`.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional

import torch.nn.functional as F

from .. import contract, reference
from . import library, onednn
from .cosine import cosine_as_dot


class Fused:
    """`<op>_fwd` of one namespace, called with the reference's arguments."""

    __slots__ = ("name", "n_args", "single", "outputs", "run", "cosine_at")

    def __init__(self, op: contract.Op, run: Callable):
        self.name, self.n_args, self.run = op.name, op.n_args, run
        self.single, self.outputs = len(op.results) == 1, op.outputs
        names = [n for _, n in op.args] + list(op.extras)
        # Swin V2 cosine attention: (logit_scale, qkv, qkv_bias or None, num_heads, scale) positions
        self.cosine_at = (names.index("logit_scale"), 0, names.index("qkv_bias") if "qkv_bias" in names else None,
                          names.index("num_heads"), names.index("scale")) if "logit_scale" in names else None

    def __call__(self, *args):
        if self.cosine_at is not None and args[self.cosine_at[0]] is not None:
            args = self._as_dot(args)
        got = self.run(self.name, *args[:self.n_args])
        if self.single:
            return got
        return got[0] if self.outputs == 1 else got[:self.outputs]

    def _as_dot(self, args):
        at_ls, at_qkv, at_bias, at_heads, at_scale = self.cosine_at
        args = list(args)
        bias = args[at_bias] if at_bias is not None else None
        args[at_qkv], bias = cosine_as_dot(args[at_qkv], bias, args[at_heads], args[at_ls])
        if at_bias is not None:
            args[at_bias] = bias
        args[at_scale] = 1.0
        return args


class OneDNNFirst:
    """`fused`, except CPU fp32 inference that oneDNN runs with a packed weight (`onednn.usable`)."""

    __slots__ = ("fused",)

    def __init__(self, fused: Callable):
        self.fused = fused

    def __call__(self, x, weight, bias, approximate, *rest):
        if onednn.usable(x, weight, bias):
            return onednn.linear(x, weight, bias, gelu=approximate)
        return self.fused(x, weight, bias, approximate, *rest)


class ConvThenLayerNorm:
    """The fused conv + LayerNorm up to `max_channels` channels (`fused`; None: the namespace has no
    such op); beyond, the namespace's conv op then torch's LayerNorm (same results)."""

    __slots__ = ("fused", "conv", "max_channels")

    def __init__(self, fused: Optional[Callable], conv: Callable, max_channels: int):
        self.fused, self.conv, self.max_channels = fused, conv, max_channels

    def __call__(self, x, weight, bias, ln_weight, ln_bias, eps, layout):
        channels = x.shape[1] if layout == "NCHW" else x.shape[3]
        if self.fused is not None and channels <= self.max_channels:
            return self.fused(x, weight, bias, ln_weight, ln_bias, eps, layout)
        y = self.conv(x, weight, bias, True, layout)
        tokens = y.flatten(2).transpose(1, 2) if layout == "NCHW" else y.flatten(1, 2)  # [B, H*W, C]
        return tokens, F.layer_norm(tokens, (channels,), ln_weight, ln_bias, eps)


def linear(x, weight, bias, residual):
    """oneDNN with a packed weight for CPU fp32 inference (`onednn.usable`), else the reference: the
    GEMM is torch's on every device; what a backend adds is the packing and the fused epilogue."""
    if onednn.usable(x, weight, bias, residual):
        return onednn.linear(x, weight, bias, residual=residual)
    return reference.linear_ref(x, weight, bias, residual)


def conv1x1(x, weight, bias, gelu, residual):
    """As `linear`, for a 1x1 convolution on an NCHW map; only the GELU epilogue is worth oneDNN's
    packed path there (see `onednn.conv1x1_gelu`)."""
    if gelu is not None and onednn.usable(x, weight, bias):
        return onednn.conv1x1_gelu(x, weight, bias, gelu)
    return reference.conv1x1_ref(x, weight, bias, gelu, residual)


# ops whose oneDNN inference path (CPU fp32, no grad) beats the namespace's kernel
_ONEDNN_FIRST = ("linear_gelu",)


def make_impls(namespace: str, ops: Iterable[contract.Op],
               fused_layernorm_channels: int = 0) -> Dict[str, Callable]:
    """`{op name: callable with the reference signature}` for the contract ops `ops` of `namespace`,
    plus the projections (`linear`, `conv1x1`: torch's GEMM or oneDNN on every backend).

    Args:
        namespace: the op namespace.
        ops: the contract rows whose `<op>_fwd` the namespace has (or will have, for a JIT build).
        fused_layernorm_channels: the most channels the namespace's `dwconv_layernorm_fwd` takes;
            beyond (or without that op), its conv op followed by torch's LayerNorm runs instead.
    """
    run = library.forward(namespace)  # differentiable under torch.func transforms and forward mode too
    impls: Dict[str, Callable] = {op.name: Fused(op, run) for op in ops}
    for name in _ONEDNN_FIRST:
        if name in impls:
            impls[name] = OneDNNFirst(impls[name])
    if "dwconv2d" in impls:
        impls["dwconv_layernorm"] = ConvThenLayerNorm(impls.get("dwconv_layernorm"), impls["dwconv2d"],
                                                      fused_layernorm_channels)
    impls.update(linear=linear, conv1x1=conv1x1)
    return impls
