"""UniFormer image classification (Sense-X/UniFormer), parameter names as the official repository.

Stages 1-2 are `CBlock`s (convolutional relation aggregator: BatchNorm, 1x1 conv, depthwise 5x5,
1x1 conv, 1x1-conv MLP), stages 3-4 are `SABlock`s (global multi-head self-attention on the
flattened map). Every block starts with the dynamic position embedding `x + dwconv3x3(x)`. The
depthwise convolutions and the attention run through `fastwin.ops`, so the fused backends serve
them; everything else is plain PyTorch. Official state dicts load without renaming.

Layout: NCHW `[B, C, H, W]` between blocks (as the official code); SABlocks work on `[B, H*W, C]`.

Inference-only forms (eval, no autograd, fp32 CPU, a backend that runs the packed oneDNN GEMMs; see
`fastwin.ops.inference`): both blocks keep channels-last maps end to end and run packed oneDNN GEMMs and
the cpp backend's depthwise conv kernel directly, with BatchNorms and the position embedding's residual
folded into weights (`fastwin.layers.folding`); SABlocks run the attention through the dispatcher.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .. import ops
from ..ops import inference
from ..ops.inference import folded_form
from ..layers import Attention, DropPath, Mlp, folding, inference_plan, projection
from ..layers.checks import features as _check_features
from ..utils import init_weights_trunc_normal
from .checkpoint import checkpoint_filter
from ..utils import fx_proxy
from .features import check_image, check_output_fmt, feature_take_indices, to_format
from .pooling import MAP_POOLS, check_pool, pool_map, pooled_width
from .registry import pretrained_cfg, register_model, register_pretrained_cfgs

__all__ = ["UniFormer", "CBlock", "SABlock", "CMlp"]


# ---------------------------------------------------------------------------------------------------
# helpers


def _drop_path(p: float) -> nn.Module:
    return DropPath(p) if p > 0.0 else nn.Identity()


def _plain(m: nn.Module, cls) -> bool:
    """`m` is exactly `cls` (no subclass, nothing `swap` replaced) without hooks."""
    return type(m) is cls and not (m._forward_hooks or m._forward_pre_hooks)


# what the inference-only forms run themselves, for `fastwin.dispatch.record`: the convs and GEMMs on the cpp
# backend's packed oneDNN path (the SABlock's attention goes through the dispatcher and records itself)
_CBLOCK_OPS = (("dwconv2d", "cpp"), ("linear", "cpp"), ("dwconv2d", "cpp"), ("linear", "cpp"),
               ("linear_gelu", "cpp"), ("linear", "cpp"))
_SABLOCK_OPS = (("dwconv2d", "cpp"), ("linear", "cpp"), ("linear", "cpp"), ("linear_gelu", "cpp"), ("linear", "cpp"))


def _odd_depthwise(*convs: nn.Conv2d) -> bool:
    """The depthwise `convs` have weights [C, 1, k, k] of odd k (the inference path's "same" conv)."""
    return all(c.weight.dim() == 4 and c.weight.shape[-1] % 2 == 1 for c in convs)


def _tensors(*modules: nn.Module) -> List[Optional[torch.Tensor]]:
    """Each module's weight and bias, in order."""
    return [t for m in modules for t in (m.weight, m.bias)]


def _pos_embed(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The dynamic position embedding `x + dwconv(x)` of an inference-only form, on `x` [B, C, H, W] (copied
    to channels-last memory if it is not there): one depthwise conv (the cpp kernel) with the identity
    folded into its centre tap (`weight`, `bias` from `folding.dwconv_with_identity`). Channels-last out."""
    return inference.dwconv(x.contiguous(memory_format=torch.channels_last), weight, bias)


def _packed_linear(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    return inference.pack_linear(weight), bias


def _drop_rate(m: nn.Module):
    """What `projection.passes_through` reads of a dropout / drop path besides its type and training flag."""
    return m.__dict__.get("p", m.__dict__.get("drop_prob"))


def _cast(t: Optional[torch.Tensor], x: torch.Tensor) -> Optional[torch.Tensor]:
    """Parameters in the activation dtype: under autocast the 1x1 convs hand bf16/fp16 maps to the
    depthwise op, whose weights stay fp32 (a no-op without autocast)."""
    return None if t is None else t.to(x.dtype)


class CMlp(nn.Module):
    """MLP of 1x1 convolutions on `[B, C, H, W]` (official `CMlp`: fc1 -> act -> drop -> fc2 -> drop)."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden_features, out_features, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x, residual=None):
        """[B, C, H, W] (and residual [B, C_out, H, W] | None) -> [residual +] mlp(x), [B, C_out, H, W]; the
        GELU runs in fc1's epilogue and the add in fc2's (on backends that fuse them)."""
        h = self.drop(projection.conv1x1(self.fc1, x, self.act))
        if projection.passes_through(self.drop):
            return projection.conv1x1(self.fc2, h, residual=residual)
        y = self.drop(self.fc2(h))
        return y if residual is None else residual + y


# ---------------------------------------------------------------------------------------------------
# blocks


class CBlock(nn.Module):
    """Local UniFormer block (stages 1-2).

    `x = x + dw3x3(x)`; `x = x + conv2(dw5x5(conv1(BN(x))))`; `x = x + CMlp(BN(x))`.
    `num_heads`, `qkv_bias`, `qk_scale`, `attn_drop` and `norm_layer` are accepted for signature
    parity with the official class and unused there too.

    forward: [B, C, H, W] -> [B, C, H, W]
    """

    def __init__(self, dim, num_heads=None, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0,
                 attn_drop=0.0, drop_path=0.0, act_layer=nn.GELU, norm_layer=None):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.drop_path = _drop_path(drop_path)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = CMlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def _folds(self, x: torch.Tensor) -> bool:
        """The inference-only form applies: eval mode, BatchNorms that fold into the 1x1 convs after them,
        exactly this block's modules (no hooks, nothing `swap` replaced), a backend that runs it fast."""
        mlp = self.mlp
        if self.training or type(x) is not torch.Tensor:  # first: under fx, parameters are Proxies too
            return False
        if not (_plain(mlp, CMlp) and type(mlp.act) is nn.GELU and projection.passes_through(self.drop_path, mlp.drop)):
            return False
        if not all(folding.foldable(c) for c in (self.conv1, self.conv2, mlp.fc1, mlp.fc2)):
            return False
        pe, at, c1 = self.pos_embed, self.attn, self.conv1
        others = _tensors(pe, at, self.conv2, mlp.fc1, mlp.fc2)  # one usable() pass for the whole block
        return (folding.foldable_batchnorm(self.norm1) and folding.foldable_batchnorm(self.norm2)
                and _odd_depthwise(pe, at) and folded_form(x, c1.weight, c1.bias, *others)
                and folding.versioned(*others[:4]))

    def _prepared(self, x: torch.Tensor):
        """What the inference-only form runs with, for `x`: the position embedding's depthwise weights with
        the identity folded in, norm1 + conv1 and norm2 + mlp.fc1 folded and packed, the aggregator's
        weights, conv2 and mlp.fc2 packed, the GELU form; or None when `_folds` says the module arithmetic
        must run. Kept between calls until something `_folds` or the weights read changed
        (`inference_plan.cached`)."""
        if torch.compiler.is_compiling() or self.training or type(x) is not torch.Tensor:
            return None  # torch.compile traces the module arithmetic; under fx, parameters are Proxies
        mods = self._modules
        mlp = mods["mlp"]
        if type(mlp) is not CMlp:
            return None
        sub = mlp._modules
        pe, n1, c1, c2, at, n2 = (mods[k] for k in ("pos_embed", "norm1", "conv1", "conv2", "attn", "norm2"))
        fc1, act, fc2 = sub["fc1"], sub["act"], sub["fc2"]
        convs, norms = (pe, c1, at, c2, fc1, fc2), (n1, n2)
        if not (all(type(c) is nn.Conv2d for c in convs) and all(type(n) is nn.BatchNorm2d for n in norms)
                and type(act) is nn.GELU):
            return None  # `_folds` says no: nothing worth keeping
        drops = (mods["drop_path"], sub["drop"])
        tensors = [inference_plan.tensor(m, k) for m in convs for k in ("weight", "bias")]
        tensors += [inference_plan.tensor(n, k) for n in norms for k in ("weight", "bias", "running_mean", "running_var")]
        extra = (n1.eps, n2.eps, act.approximate, tuple(_drop_rate(d) for d in drops),
                 tuple(projection.conv_geometry(c) for c in convs))

        def build():
            if not self._folds(x):
                return None
            return (folding.dwconv_with_identity(pe), _packed_linear(*folding.conv1x1_as_linear(c1, n1)),
                    (at.weight, at.bias), _packed_linear(*folding.conv1x1_as_linear(c2)),
                    _packed_linear(*folding.conv1x1_as_linear(fc1, n2)), _packed_linear(*folding.conv1x1_as_linear(fc2)),
                    act.approximate)

        return inference_plan.cached(self, x, convs + norms + (mlp, act) + drops, tensors, extra, build)

    def _forward_folded(self, x: torch.Tensor, prepared) -> torch.Tensor:
        """The block on channels-last pixels `[B, H, W, C]` with norm1 folded into conv1 and norm2 into
        mlp.fc1: two depthwise convs (the position embedding's residual folded into its weight) and four
        GEMMs with the GELU / residual adds in their epilogues on packed oneDNN weights; no BatchNorm
        pass, no layout copies between blocks, none of the dispatcher's per-op work (`_prepared`).

        [B, C, H, W] (any memory format) -> [B, C, H, W] in channels-last memory."""
        pos, (w1, b1), (aw, ab), (w2, b2), (w3, b3), (w4, b4), gelu = prepared
        t = _pos_embed(x, *pos).permute(0, 2, 3, 1)  # [B, H, W, C], contiguous
        h = inference.dwconv(inference.linear_packed(t, w1, b1).permute(0, 3, 1, 2), aw, ab).permute(0, 2, 3, 1)
        t = inference.linear_packed(h, w2, b2, residual=t)
        h = inference.linear_packed(t, w3, b3, gelu=gelu)
        inference.note(*_CBLOCK_OPS)
        return inference.linear_packed(h, w4, b4, residual=t).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self, self.pos_embed.in_channels, ("[B, C, H, W]",), channel_dim=1)
        prepared = self._prepared(x)
        if prepared is not None:
            return self._forward_folded(x, prepared)
        pe, at = self.pos_embed, self.attn
        x = ops.dwconv2d(x, _cast(pe.weight, x), _cast(pe.bias, x), residual=True)
        h = projection.conv1x1(self.conv1, self.norm1(x))
        h = ops.dwconv2d(h, _cast(at.weight, h), _cast(at.bias, h))  # local relation aggregator
        if projection.passes_through(self.drop_path):  # inference: the adds run in the convs' epilogues
            x = projection.conv1x1(self.conv2, h, residual=x)
            return projection.add_into(self.mlp, CMlp, self.norm2(x), x)
        x = x + self.drop_path(self.conv2(h))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SABlock(nn.Module):
    """Global UniFormer block (stages 3-4).

    `t = flatten(x + dw3x3(x))`; `t = t + [gamma_1 *] Attn(LN(t))`; `t = t + [gamma_2 *] Mlp(LN(t))`.
    The position embedding, flatten and norm1 run as one `ops.dwconv_layernorm` call.

    Args:
        layer_scale: initial value of `gamma_1`/`gamma_2` (official `base_ls` uses 1e-6), or None
            for no layer scale (the official module then has no gamma parameters).

    forward: [B, C, H, W] -> [B, C, H, W]
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0, attn_drop=0.0,
                 drop_path=0.0, act_layer=nn.GELU, norm_eps=1e-6, layer_scale: Optional[float] = None):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                              attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = _drop_path(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.ls = layer_scale is not None
        if self.ls:
            self.gamma_1 = nn.Parameter(layer_scale * torch.ones(dim))
            self.gamma_2 = nn.Parameter(layer_scale * torch.ones(dim))

    def _folds(self, x: torch.Tensor) -> bool:
        """The inference-only form applies (see CBlock._folds): eval mode, no layer scale, exactly this
        block's modules without hooks, an attention not pinned to a backend, nothing dropping, a backend
        that runs the GEMMs fast."""
        if self.training or self.ls or type(x) is not torch.Tensor:  # first: under fx, parameters are Proxies
            return False
        attn, mlp = self.attn, self.mlp
        if not (_plain(attn, Attention) and attn.backend is None and _plain(mlp, Mlp) and _plain(mlp.act, nn.GELU)
                and all(_plain(m, nn.LayerNorm) for m in (self.norm1, self.norm2))
                and all(_plain(m, nn.Linear) for m in (attn.qkv, attn.proj, mlp.fc1, mlp.fc2))
                and projection.passes_through(self.drop_path, attn.attn_drop, attn.proj_drop, mlp.drop)):
            return False
        pe, qkv = self.pos_embed, attn.qkv
        others = _tensors(pe, qkv, attn.proj, mlp.fc1, mlp.fc2)  # one usable() pass for the whole block
        return (_odd_depthwise(pe) and folded_form(x, qkv.weight[:, :, None, None], qkv.bias, *others)
                and folding.versioned(*others))

    def _prepared(self, x: torch.Tensor):
        """What the inference-only form runs with, for `x`: the position embedding's depthwise weights with
        the identity folded in and the four GEMMs' packed weights; or None when `_folds` says the module
        arithmetic must run. Kept between calls until something `_folds` or the weights read changed
        (`inference_plan.cached`, as CBlock's)."""
        if torch.compiler.is_compiling() or self.training or self.ls or type(x) is not torch.Tensor:
            return None  # torch.compile traces the module arithmetic; under fx, parameters are Proxies
        mods = self._modules
        pe, n1, attn, n2, mlp = (mods[k] for k in ("pos_embed", "norm1", "attn", "norm2", "mlp"))
        if not (type(attn) is Attention and type(mlp) is Mlp and type(pe) is nn.Conv2d):
            return None  # `_folds` says no: nothing worth keeping
        at, sub = attn._modules, mlp._modules
        linears = (at["qkv"], at["proj"], sub["fc1"], sub["fc2"])
        if not (all(type(m) is nn.Linear for m in linears) and all(type(n) is nn.LayerNorm for n in (n1, n2))):
            return None
        drops = (mods["drop_path"], at["attn_drop"], at["proj_drop"], sub["drop"])
        tensors = [inference_plan.tensor(m, k) for m in (pe,) + linears for k in ("weight", "bias")]
        extra = (attn.backend, sub["act"].__dict__.get("approximate"), tuple(_drop_rate(d) for d in drops),
                 projection.conv_geometry(pe))

        def build():
            if not self._folds(x):
                return None
            return (folding.dwconv_with_identity(pe),) + tuple(_packed_linear(m.weight, m.bias) for m in linears)

        return inference_plan.cached(self, x, (pe, n1, attn, n2, mlp, sub["act"]) + linears + drops, tensors, extra,
                                     build)

    def _forward_folded(self, x: torch.Tensor, prepared) -> torch.Tensor:
        """The block on channels-last tokens `[B, H*W, C]`: the position embedding as one depthwise
        conv (as CBlock's), the attention through the dispatcher (the cpp kernel takes the [B, N, 3C]
        GEMM output as it is, and is 1.1x torch's fused SDPA at UniFormer-S's 196 tokens, 1 thread), four
        packed oneDNN GEMMs with GELU / residual epilogues, and no layout copy at the block's end.

        [B, C, H, W] (any memory format) -> [B, C, H, W] in channels-last memory."""
        B, C, H, W = x.shape
        attn, mlp, n1, n2 = self.attn, self.mlp, self.norm1, self.norm2
        pos, (wq, bq), (wp, bp), (w1, b1), (w2, b2) = prepared
        t = _pos_embed(x, *pos).permute(0, 2, 3, 1).reshape(B, H * W, C)  # a view
        qkv = inference.linear_packed(F.layer_norm(t, n1.normalized_shape, n1.weight, n1.bias, n1.eps), wq, bq)
        a = ops.attention(qkv, attn.num_heads, attn.scale)  # [B, H*W, C]
        t = inference.linear_packed(a, wp, bp, residual=t)
        h = inference.linear_packed(F.layer_norm(t, n2.normalized_shape, n2.weight, n2.bias, n2.eps), w1, b1,
                                    gelu=mlp.act.approximate)
        t = inference.linear_packed(h, w2, b2, residual=t)
        inference.note(*_SABLOCK_OPS)
        return t.view(B, H, W, C).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self, self.pos_embed.in_channels, ("[B, C, H, W]",), channel_dim=1)
        prepared = self._prepared(x)
        if prepared is not None:
            return self._forward_folded(x, prepared)
        B, C, H, W = x.shape
        pe, n1 = self.pos_embed, self.norm1
        x, h = ops.dwconv_layernorm(x, _cast(pe.weight, x), _cast(pe.bias, x), _cast(n1.weight, x),
                                    _cast(n1.bias, x), n1.eps)
        if not self.ls and projection.passes_through(self.drop_path):  # the adds in the projections' epilogues
            x = projection.add_into(self.attn, Attention, h, x)  # [B, H*W, C]
            x = projection.add_into(self.mlp, Mlp, self.norm2(x), x)
            return x.transpose(1, 2).reshape(B, C, H, W)
        h = self.attn(h)  # [B, H*W, C]
        x = x + self.drop_path(self.gamma_1 * h if self.ls else h)
        h = self.mlp(self.norm2(x))
        x = x + self.drop_path(self.gamma_2 * h if self.ls else h)
        return x.transpose(1, 2).reshape(B, C, H, W)


# ---------------------------------------------------------------------------------------------------
# stems


# PatchEmbed's gather + GEMM form pays from this many input channels: measured (1 thread, b1 / b8) 1.3-2.1x
# for UniFormer-S's 128 -> 320 and 320 -> 512 stems, even at b1 and 0.9x at b8 for 64 -> 128
_PATCH_GEMM_MIN_CHANNELS = 128


class PatchEmbed(nn.Module):
    """Official UniFormer patch stem: Conv(k = s = patch) then LayerNorm over channels (eps 1e-5,
    the torch default the official code uses here). Sizes that are not multiples of the patch are
    floored, as the convolution does.

    forward: [B, C_in, H, W] -> [B, D, H // p, W // p]
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.norm = nn.LayerNorm(embed_dim)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        # inference-only form (see CBlock): channels-last maps out, no copy; on channels-last input
        # (the previous stage's) the patch conv runs as gather + packed GEMM
        fast = not self.training and type(x) is torch.Tensor and folded_form(x, self.proj.weight[:, :, :1, :1])
        if (fast and self.proj.in_channels >= _PATCH_GEMM_MIN_CHANNELS and folding.foldable_patch_conv(self.proj)
                and x.is_contiguous(memory_format=torch.channels_last)):
            y = self._patch_gemm(x)
        else:
            y = projection.patch_conv(self.proj, x).permute(0, 2, 3, 1)  # [B, H', W', D]
        y = self.norm(y).permute(0, 3, 1, 2)  # channels-last memory
        return y if fast else y.contiguous()

    def _patch_gemm(self, x: torch.Tensor) -> torch.Tensor:
        """The patch conv on channels-last `x` [B, C, H, W] -> [B, H // p, W // p, D] (floored as the conv)."""
        B, C, H, W = x.shape
        p = self.proj.kernel_size[0]
        h, w = H // p, W // p
        t = x.permute(0, 2, 3, 1)[:, : h * p, : w * p]  # [B, H, W, C]
        t = t.reshape(B, h, p, w, p, C).permute(0, 1, 3, 2, 4, 5).reshape(B, h, w, p * p * C)  # [dy, dx, C] gather
        weight, bias = folding.patch_conv_as_linear(self.proj)
        inference.note(("linear", "cpp"))
        return inference.linear(t, weight, bias)


def _conv_bn(cin, cout):
    return [nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1), nn.BatchNorm2d(cout)]


class ConvStemHead(nn.Module):
    """Official `head_embedding` (small_plus stem): two stride-2 3x3 conv+BN with a GELU between.

    forward: [B, C_in, H, W] -> [B, D, ceil(ceil(H/2)/2), ...]
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.proj = nn.Sequential(*_conv_bn(in_channels, mid), nn.GELU(), *_conv_bn(mid, out_channels))

    def forward(self, x):
        return self.proj(x)


class ConvStemMiddle(nn.Module):
    """Official `middle_embedding`: one stride-2 3x3 conv + BN between stages.

    forward: [B, C_in, H, W] -> [B, D, ceil(H/2), ceil(W/2)]
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Sequential(*_conv_bn(in_channels, out_channels))

    def forward(self, x):
        return self.proj(x)


# ---------------------------------------------------------------------------------------------------
# model


class UniFormer(nn.Module):
    """UniFormer for image classification.

    Args:
        depth: blocks per stage (4 stages: 2 CBlock stages, 2 SABlock stages).
        img_size: nominal input size (kept for parity; any size >= the stem's minimum works).
        in_chans: input channels.
        num_classes: classifier outputs (0: no head).
        embed_dim: channels per stage.
        head_dim: channels per attention head (num_heads = dim // head_dim).
        mlp_ratio: MLP hidden size / dim.
        qkv_bias, qk_scale: attention projection bias and logit scale override.
        drop_rate, attn_drop_rate, drop_path_rate: dropout, attention dropout, stochastic depth
            (linearly increasing over all blocks, as official).
        conv_stem: overlapping conv stem (`small_plus*`) instead of the patch stem.
        layer_scale: gamma init for SABlocks (`base_ls`: 1e-6) or None.
        norm_eps: SABlock LayerNorm epsilon.
        global_pool: head pooling, timm's names (`pooling.MAP_POOLS`; "" for none).
    """

    def __init__(self, depth: Sequence[int] = (3, 4, 8, 3), img_size=224, in_chans=3, num_classes=1000,
                 embed_dim: Sequence[int] = (64, 128, 320, 512), head_dim=64, mlp_ratio=4.0, qkv_bias=True,
                 qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, conv_stem=False,
                 layer_scale: Optional[float] = None, norm_eps=1e-6, global_pool="avg"):
        super().__init__()
        self.global_pool = check_pool(global_pool, MAP_POOLS, type(self).__name__)
        depth, embed_dim = list(depth), list(embed_dim)
        if len(depth) != 4 or len(embed_dim) != 4:
            raise ValueError(f"depth and embed_dim must have 4 entries, got {depth} and {embed_dim}")
        for d in embed_dim[2:]:
            if d % head_dim:
                raise ValueError(f"embed_dim {d} is not divisible by head_dim {head_dim}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.num_features = embed_dim[-1]
        self.head_hidden_size = pooled_width(self.num_features, global_pool)  # width of forward_head(pre_logits)
        self.conv_stem = conv_stem
        self.grad_checkpointing = False
        self.num_stages = 4  # fewer once `prune_intermediate_layers` dropped later stages
        self.output_fmt = "NCHW"
        # `module`: the stage's last block, whose output is the stage map (hooks, torch.fx extraction)
        self.feature_info = [dict(num_chs=embed_dim[i], reduction=4 * 2 ** i, module=f"blocks{i + 1}.{depth[i] - 1}")
                             for i in range(4)]
        if conv_stem:
            self.patch_embed1 = ConvStemHead(in_chans, embed_dim[0])
            self.patch_embed2 = ConvStemMiddle(embed_dim[0], embed_dim[1])
            self.patch_embed3 = ConvStemMiddle(embed_dim[1], embed_dim[2])
            self.patch_embed4 = ConvStemMiddle(embed_dim[2], embed_dim[3])
        else:
            self.patch_embed1 = PatchEmbed(4, in_chans, embed_dim[0])
            self.patch_embed2 = PatchEmbed(2, embed_dim[0], embed_dim[1])
            self.patch_embed3 = PatchEmbed(2, embed_dim[1], embed_dim[2])
            self.patch_embed4 = PatchEmbed(2, embed_dim[2], embed_dim[3])
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depth), device="cpu").tolist()  # cpu: also under meta
        start = [sum(depth[:i]) for i in range(4)]
        common = dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                      attn_drop=attn_drop_rate)
        for s in range(4):
            if s < 2:
                blocks = [CBlock(embed_dim[s], embed_dim[s] // head_dim, drop_path=dpr[start[s] + i], **common)
                          for i in range(depth[s])]
            else:
                blocks = [SABlock(embed_dim[s], embed_dim[s] // head_dim, drop_path=dpr[start[s] + i],
                                  norm_eps=norm_eps, layer_scale=layer_scale, **common) for i in range(depth[s])]
            setattr(self, f"blocks{s + 1}", nn.ModuleList(blocks))
        self.norm = nn.BatchNorm2d(embed_dim[-1])
        self.pre_logits = nn.Identity()  # official representation layer, unused by every variant
        self.head = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights_trunc_normal)

    # -- timm-style surface --------------------------------------------------------------------------

    def set_grad_checkpointing(self, enable: bool = True):
        """Recompute blocks in backward to save memory.

        Only SABlocks are checkpointed: recomputing a CBlock in training mode would run its
        BatchNorms twice and update their running statistics twice.
        """
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        return self.head

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Parameter names to keep out of weight decay (beyond timm's 1-D rule): none.

        The official set (`pos_embed`, `cls_token`) names no parameter of this model, whose position
        embeddings are convolutions; biases, norms and layer scales are 1-D and excluded by timm anyway.
        """
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer-wise parameter groups for `timm.optim`, in timm's Swin style: the stem, then per
        stage its patch embedding with the first block, each block, the final norm with the last."""
        return dict(
            stem=r"^patch_embed1\.",
            blocks=r"^(?:patch_embed|blocks)(\d+)" if coarse else [
                (r"^patch_embed(\d+)\.", (0,)),
                (r"^blocks(\d+)\.(\d+)\.", None),
                (r"^norm\.", (99999,)),
            ],
        )

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        """New head Linear(head_hidden_size, num_classes) (Identity for 0) and, unless None, the pooling
        (`""`: none, forward returns the [B, C, h, w] map)."""
        if global_pool is not None:
            self.global_pool = check_pool(global_pool, MAP_POOLS, type(self).__name__)
            self.head_hidden_size = pooled_width(self.num_features, global_pool)
        self.num_classes = num_classes
        ref = next(self.parameters())
        self.head = (nn.Linear(self.head_hidden_size, num_classes, device=ref.device, dtype=ref.dtype)
                     if num_classes > 0 else nn.Identity())

    def _check_input(self, x):
        check_image(x, self.in_chans, self)
        if not self.conv_stem and not fx_proxy(x) and min(x.shape[-2:]) < 32:
            # patch stem: 4x then three 2x patchifications need at least a 32 px side
            raise ValueError(f"input must be at least 32x32 for the patch stem, got {tuple(x.shape[-2:])}")

    def _run_blocks(self, blocks: nn.ModuleList, x):
        for blk in blocks:
            if self.grad_checkpointing and isinstance(blk, SABlock) and torch.is_grad_enabled():
                x = checkpoint(ops.bound(blk), x, use_reentrant=False)  # recompute on this backend
            else:
                x = blk(x)
        return x

    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Stage i (0-based): its patch embedding, then its blocks."""
        x = getattr(self, f"patch_embed{i + 1}")(x)
        if i == 0:
            x = self.pos_drop(x)
        return self._run_blocks(getattr(self, f"blocks{i + 1}"), x)

    @inference.in_arena
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> normalized final map [B, 512, H/32, W/32] (floored / ceiled by the stem)."""
        self._check_input(x)
        for i in range(self.num_stages):
            x = self._stage(i, x)
        return self.pre_logits(self.norm(x))

    @inference.in_arena
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, Sequence[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward that also returns the four stage maps (timm's backbone interface).

        Args:
            x: [B, C_in, H, W].
            indices: stages to return (None: all; int n: the last n; or a sequence, negative from the end).
            norm: apply the final BatchNorm to the last stage's map.
            stop_early: skip the stages after the last one requested.
            output_fmt: "NCHW" or "NHWC".
            intermediates_only: return only the list of maps.
        Returns:
            maps [B, C_i, H/2^(i+2), W/2^(i+2)] (NCHW) or their NHWC permutations; with
            `intermediates_only=False`, `(final normalized map [B, C, h, w], maps)`.
        """
        check_output_fmt(output_fmt)
        self._check_input(x)
        take, last = feature_take_indices(self.num_stages, indices)
        maps = []
        for i in range(last + 1 if stop_early else self.num_stages):
            x = self._stage(i, x)
            if i in take:
                y = self.norm(x) if norm and i == len(self.feature_info) - 1 else x  # the final stage only
                maps.append(to_format(y, "NCHW", output_fmt))
        if intermediates_only:
            return maps
        return self.pre_logits(self.norm(x)), maps

    def prune_intermediate_layers(self, indices: Union[int, Sequence[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages that `indices` do not need (their modules become empty).

        Returns:
            the absolute stage indices to take.
        """
        take, last = feature_take_indices(self.num_stages, indices)
        for i in range(last + 1, self.num_stages):
            setattr(self, f"patch_embed{i + 1}", nn.Identity())
            setattr(self, f"blocks{i + 1}", nn.ModuleList())
        self.num_stages = last + 1
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """[B, C, h, w] -> pooled [B, head_hidden_size] -> logits [B, num_classes] (unless `pre_logits`)."""
        x = pool_map(x, self.global_pool, dims=(2, 3))
        if pre_logits:
            return x
        if self.global_pool:
            return self.head(x)
        return self.head(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # unpooled: classify every position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------------
# checkpoint filter


@checkpoint_filter(UniFormer)
def checkpoint_filter_fn(state_dict, model: UniFormer):
    """Official checkpoints (`{'model': sd}`, unwrapped by the loader) use fastwin's names already.

    Checkpoints saved by torch < 0.4.1 lack BatchNorm `num_batches_tracked`; those counters only
    matter for momentum=None BatchNorm, so missing ones are filled with zeros. Everything else is
    left for the strict loader to check.
    """
    out = dict(state_dict)
    for name, buf in model.state_dict().items():
        if name.endswith("num_batches_tracked") and name not in out:
            prefix = name[: -len("num_batches_tracked")]
            if prefix + "running_mean" in out:
                out[name] = torch.zeros_like(buf)
    return out


# ---------------------------------------------------------------------------------------------------
# default configs (Sense-X/UniFormer evaluates as DeiT: ImageNet mean/std, bicubic, 224 / 256 crop)

def _cfg(conv_stem: bool = False):
    return pretrained_cfg(224, crop_pct=0.875, first_conv="patch_embed1.proj.0" if conv_stem else "patch_embed1.proj",
                          classifier="head", pool_size=(7, 7), tag="in1k")


register_pretrained_cfgs({
    "uniformer_small": _cfg(),
    "uniformer_small_plus": _cfg(conv_stem=True),
    "uniformer_small_plus_dim64": _cfg(conv_stem=True),
    "uniformer_base": _cfg(),
    "uniformer_base_ls": _cfg(),
})


# ---------------------------------------------------------------------------------------------------
# entry points


def _create(model_args: dict, **kwargs) -> UniFormer:
    # keyword arguments override the variant's defaults (e.g. tiny depths in tests)
    args = dict(embed_dim=(64, 128, 320, 512), mlp_ratio=4, qkv_bias=True, **model_args)
    return UniFormer(**dict(args, **kwargs))


@register_model
def uniformer_small(**kwargs) -> UniFormer:
    return _create(dict(depth=(3, 4, 8, 3), head_dim=64), **kwargs)


@register_model
def uniformer_small_plus(**kwargs) -> UniFormer:
    return _create(dict(depth=(3, 5, 9, 3), head_dim=32, conv_stem=True), **kwargs)


@register_model
def uniformer_small_plus_dim64(**kwargs) -> UniFormer:
    return _create(dict(depth=(3, 5, 9, 3), head_dim=64, conv_stem=True), **kwargs)


@register_model
def uniformer_base(**kwargs) -> UniFormer:
    return _create(dict(depth=(5, 8, 20, 7), head_dim=64), **kwargs)


@register_model
def uniformer_base_ls(**kwargs) -> UniFormer:
    return _create(dict(depth=(5, 8, 20, 7), head_dim=64, layer_scale=1e-6), **kwargs)
