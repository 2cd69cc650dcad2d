"""Reference-signature entry points over a namespace of compiled ops (`fastwin::` Triton,
`fastwin_C::` C++/CUDA), shared by the triton, cpp and cuda backends.

Arguments arrive validated and normalized by `fastwin.ops` (float scale, pair windows, mask in qkv's
dtype). Each entry point calls `<op>_fwd` and returns the op's outputs without the statistics the
backward keeps; autograd is the shared definition in `fastwin.backend.library`.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

from .. import reference
from . import library, onednn
from .cosine import cosine_as_dot


def _tokens(y: torch.Tensor, layout: str) -> torch.Tensor:
    """[B, C, H, W] ("NCHW") or [B, H, W, C] ("NHWC") -> [B, H*W, C]."""
    return y.flatten(2).transpose(1, 2) if layout == "NCHW" else y.flatten(1, 2)


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


def make_impls(namespace: str, fused_layernorm_channels: Optional[int] = None,
               with_linear_gelu: bool = False) -> Dict[str, Callable]:
    """`{op name: callable with the reference signature}` running `torch.ops.<namespace>.<op>_fwd`.

    Args:
        namespace: the op namespace.
        fused_layernorm_channels: the most channels the namespace's `dwconv_layernorm_fwd` takes;
            None when it has no such op (the conv op followed by torch's LayerNorm runs instead).
        with_linear_gelu: the namespace has `linear_gelu_fwd`.
    """
    run = library.forward(namespace)  # differentiable under torch.func transforms and forward mode too

    def shifted_window_attention(qkv, num_heads, window_size, shift_size, table, qkv_bias, scale, pad_order,
                                 dropout_p, logit_scale=None):
        if logit_scale is not None:
            qkv, qkv_bias = cosine_as_dot(qkv, qkv_bias, num_heads, logit_scale)
            scale = 1.0
        return run("shifted_window_attention", qkv, table, qkv_bias, num_heads, list(window_size),
                   list(shift_size), scale, pad_order == "pad_roll")[0]

    def window_attention(qkv, num_heads, window_size, table, mask, scale, dropout_p, logit_scale=None):
        if logit_scale is not None:
            qkv, _ = cosine_as_dot(qkv, None, num_heads, logit_scale)
            scale = 1.0
        return run("window_attention", qkv, table, mask, num_heads, list(window_size), scale)[0]

    def attention(qkv, num_heads, scale, dropout_p):
        return run("attention", qkv, num_heads, scale)[0]

    def dwconv2d(x, weight, bias, residual, layout):
        return run("dwconv2d", x, weight, bias, residual, layout)

    def dwconv_layernorm(x, weight, bias, ln_weight, ln_bias, eps, layout):
        channels = x.shape[1] if layout == "NCHW" else x.shape[3]
        if fused_layernorm_channels is not None and channels <= fused_layernorm_channels:
            tokens, normed, _, _ = run("dwconv_layernorm", x, weight, bias, ln_weight, ln_bias, eps, layout)
            return tokens, normed
        tokens = _tokens(dwconv2d(x, weight, bias, True, layout), layout)
        return tokens, F.layer_norm(tokens, (channels,), ln_weight, ln_bias, eps)

    def linear_gelu(x, weight, bias, approximate):
        if onednn.usable(x, weight, bias):
            return onednn.linear(x, weight, bias, gelu=approximate)
        # the pre-activation is kept for the backward only when autograd (or a transform) may ask for it
        save = library.transforming() or (
            torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)))
        return run("linear_gelu", x, weight, bias, approximate, save)[0]

    impls = {
        "shifted_window_attention": shifted_window_attention,
        "window_attention": window_attention,
        "attention": attention,
        "dwconv2d": dwconv2d,
        "dwconv_layernorm": dwconv_layernorm,
        "linear": linear,
        "conv1x1": conv1x1,
    }
    if with_linear_gelu:
        impls["linear_gelu"] = linear_gelu
    return impls
