"""Swin Transformer (Liu et al., ICCV 2021), official parameter names, partition-free attention.

State-dict names follow microsoft/Swin-Transformer: `patch_embed.{proj,norm}`,
`layers.{i}.blocks.{j}.{norm1,attn.qkv,attn.proj,attn.relative_position_bias_table,norm2,mlp.fc1,mlp.fc2}`,
`layers.{i}.downsample.{norm,reduction}` at the END of stage i, `norm`, `head`. The checkpoint filter
also takes timm's layout (downsample at the START of stage i + 1, classifier `head.fc`).

Computation follows timm: the blocks run on `[B, H, W, C]` maps of any size; the image is padded to
the patch size, each attention pads to the window (roll, then pad) and patch merging pads odd maps.
Window shrinking (map not larger than the window => window = map, no shift) is decided per block at
construction from `img_size`, as in official/timm models built for a fixed `img_size`; inputs of other
sizes run with those windows and a shift mask derived from the actual padded map.

The file ends with `swap` rules that put fastwin's attention/blocks into official, timm and
detection-style Swin models.
"""
from __future__ import annotations

import inspect
import re
import weakref
from collections import OrderedDict
from typing import Optional, Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..layers import PatchEmbed, WindowAttention
from ..layers.swin_block import PatchMerging, SwinTransformerBlock
from ..ops.checks import pair
from ..reference.window import PAD_ORDERS, relative_position_index, shift_mask
from ..swap import register_swap
from .checkpoint import checkpoint_filter
from .registry import register_model

__all__ = ["BasicLayer", "SwinTransformer"]


# ----------------------------------------------------------------------------------------------- helpers

def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _stage_resolutions(img_size, patch_size, num_stages: int):
    """Nominal feature-map size of every stage, used for window shrinking and bias-table shapes.

    The patch grid of the (padded) image, then ceil-halved per patch merging (odd maps are padded),
    as timm derives `input_resolution` from `img_size`; on the official code's sizes (everything
    divisible) this equals its floor divisions.
    """
    h, w = pair("img_size", img_size)
    ph, pw = pair("patch_size", patch_size)
    res = [(_ceil_div(h, ph), _ceil_div(w, pw))]
    for _ in range(num_stages - 1):
        res.append((_ceil_div(res[-1][0], 2), _ceil_div(res[-1][1], 2)))
    return res


def _init_weights(m: nn.Module) -> None:
    """Official init: truncated-normal(0.02) Linear weights, zero biases, unit LayerNorm."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------------------ stage

class BasicLayer(nn.Module):
    """One Swin stage: `depth` blocks alternating W-MSA / SW-MSA, then an optional PatchMerging.

    Args:
        dim: channels. input_resolution: (H, W) at construction (window shrinking). depth: blocks.
        num_heads, window_size, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop: block arguments.
        drop_path: one rate per block (list) or a single rate.
        norm_layer: norm class. downsample: PatchMerging class (or None) applied at the end.
        use_checkpoint: recompute blocks in backward (torch.utils.checkpoint, use_reentrant=False).
        pad_order: block pad/roll order.

    forward: [B, H, W, C] -> [B, H, W, C], or [B, ceil(H/2), ceil(W/2), 2C] with downsample.
    """

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio=4.0, qkv_bias=True,
                 qk_scale=None, drop=0.0, attn_drop=0.0, drop_path=0.0, norm_layer=nn.LayerNorm, downsample=None,
                 use_checkpoint=False, pad_order="roll_pad"):
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.depth = depth
        self.grad_checkpointing = use_checkpoint
        rates = list(drop_path) if isinstance(drop_path, (list, tuple)) else [drop_path] * depth
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(
                dim=dim, input_resolution=input_resolution, num_heads=num_heads, window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,  # odd blocks are shifted
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                drop_path=rates[i], norm_layer=norm_layer, pad_order=pad_order)
            for i in range(depth)
        ])
        self.downsample = downsample(input_resolution, dim=dim, norm_layer=norm_layer) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x if self.downsample is None else self.downsample(x)

    def extra_repr(self):
        return f"dim={self.dim}, input_resolution={self.input_resolution}, depth={self.depth}"


# ------------------------------------------------------------------------------------------------ model

class SwinTransformer(nn.Module):
    """Swin Transformer for image classification.

    Args:
        img_size: int or (H, W); fixes each block's window shrinking (other sizes still run).
        patch_size: patch side. in_chans: image channels. num_classes: classes (0: no head).
        embed_dim: stage-1 channels (doubles per stage). depths, num_heads: per stage.
        window_size: window side. mlp_ratio, qkv_bias, qk_scale: block arguments.
        drop_rate: dropout after the patch embedding and projections. attn_drop_rate: attention dropout.
        drop_path_rate: stochastic depth, linearly increasing over all blocks from 0.
        norm_layer: norm class. patch_norm: LayerNorm after the patch embedding.
        use_checkpoint: gradient checkpointing (also `set_grad_checkpointing`).
        pad_order: "roll_pad" (timm; default) or "pad_roll" (detection code).

    forward: [B, in_chans, H, W] (any H, W) -> [B, num_classes].
    """

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dim=96,
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24), window_size=7,
                 mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1,
                 norm_layer=nn.LayerNorm, patch_norm=True, use_checkpoint=False, pad_order="roll_pad"):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths and num_heads need one entry per stage, got {list(depths)} and {list(num_heads)}")
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.img_size = pair("img_size", img_size)
        self.patch_size = patch_size
        self.window_size = window_size
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer if patch_norm else None,
                                      flatten=False, pad=True)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # stochastic depth decay rule
        resolutions = _stage_resolutions(self.img_size, patch_size, self.num_layers)
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            self.layers.append(BasicLayer(
                dim=int(embed_dim * 2 ** i), input_resolution=resolutions[i], depth=depths[i],
                num_heads=num_heads[i], window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], norm_layer=norm_layer,
                downsample=PatchMerging if i < self.num_layers - 1 else None, use_checkpoint=use_checkpoint,
                pad_order=pad_order))
        self.norm = norm_layer(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay_keywords(self):
        return {"relative_position_bias_table"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for layer in self.layers:
            layer.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh Linear(num_features, num_classes) (Identity for 0)."""
        self.num_classes = num_classes
        ref = self.norm.weight
        self.head = (nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
                     if num_classes > 0 else nn.Identity())
        self.head.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_chans, H, W] -> normalized last-stage map [B, H', W', num_features]."""
        x = self.pos_drop(self.patch_embed(x))  # [B, H/p, W/p, C], image padded to the patch size
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """[B, H', W', C] -> pooled [B, C] (pre_logits) or logits [B, num_classes]."""
        x = x.mean(dim=(1, 2))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ------------------------------------------------------------------------------------- checkpoint filter

_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")


def _is_timm_layout(state_dict, num_layers: int) -> bool:
    """timm keeps patch merging at the start of stages 1..n-1; the official code at the end of 0..n-2."""
    stages = {int(m.group(1)) for m in map(_DOWNSAMPLE.match, state_dict) if m}
    return bool(stages) and 0 not in stages and (num_layers - 1) in stages


@checkpoint_filter(SwinTransformer)
def checkpoint_filter_fn(state_dict, model: SwinTransformer):
    """Convert timm's Swin layout to the official one; official and fastwin dicts pass unchanged.

    timm -> official: `layers.{i}.downsample.*` -> `layers.{i-1}.downsample.*`, `head.fc.*` -> `head.*`.
    """
    move = _is_timm_layout(state_dict, model.num_layers)
    out = OrderedDict()
    for k, v in state_dict.items():
        m = _DOWNSAMPLE.match(k)
        if move and m:
            k = f"layers.{int(m.group(1)) - 1}.downsample.{k[m.end():]}"
        elif k.startswith("head.fc."):
            k = "head." + k[len("head.fc."):]
        out[k] = v
    return out


# ---------------------------------------------------------------------------------------------- swap

_ATTN_CHILDREN = {"qkv", "proj", "attn_drop", "proj_drop", "softmax"}
_BLOCK_CHILDREN = {"norm1", "attn", "norm2", "mlp", "drop_path", "drop_path1", "drop_path2"}


def _window_pair(ws):
    try:
        return pair("window_size", tuple(ws) if isinstance(ws, (list, tuple, torch.Size)) else ws)
    except (ValueError, TypeError):
        return None


def _is_foreign_window_attention(m) -> bool:
    """An official/timm Swin v1 `WindowAttention`, recognised by structure (not by class name)."""
    if isinstance(m, WindowAttention) or not isinstance(m, nn.Module):
        return False
    table, qkv, proj = (getattr(m, n, None) for n in ("relative_position_bias_table", "qkv", "proj"))
    heads, window = getattr(m, "num_heads", None), _window_pair(getattr(m, "window_size", None))
    if not (isinstance(table, nn.Parameter) and isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)):
        return False
    if not isinstance(heads, int) or heads <= 0 or window is None or qkv.out_features % (3 * heads):
        return False
    wh, ww = window
    if tuple(table.shape) != ((2 * wh - 1) * (2 * ww - 1), heads):
        return False
    if proj.in_features != qkv.out_features // 3 or proj.out_features != qkv.in_features or proj.bias is None:
        return False
    # Anything else holding state (Swin v2's logit_scale / cpb_mlp, q_bias ...) means another function.
    if set(dict(m.named_children())) - _ATTN_CHILDREN:
        return False
    if any(n != "relative_position_bias_table" for n, _ in m.named_parameters(recurse=False)):
        return False
    scale = getattr(m, "scale", None)
    if scale is not None and not isinstance(scale, (int, float)):
        return False
    index = getattr(m, "relative_position_index", None)
    if index is not None:  # a non-standard index would be a different bias
        expected = relative_position_index(window)
        if not isinstance(index, torch.Tensor) or tuple(index.shape) != tuple(expected.shape):
            return False
        if not torch.equal(index.detach().cpu().long(), expected):
            return False
    return True


def _dropout_p(m) -> float:
    return float(m.p) if isinstance(m, nn.Dropout) else 0.0


def _convert_window_attention(m) -> WindowAttention:
    """fastwin.WindowAttention sharing the foreign module's parameters (same objects, not copies)."""
    heads, window = m.num_heads, _window_pair(m.window_size)
    head_dim = m.qkv.out_features // (3 * heads)
    scale = getattr(m, "scale", None)
    new = WindowAttention(m.qkv.in_features, window, heads, qkv_bias=m.qkv.bias is not None,
                          qk_scale=float(scale) if scale else None, attn_drop=_dropout_p(getattr(m, "attn_drop", None)),
                          proj_drop=_dropout_p(getattr(m, "proj_drop", None)), head_dim=head_dim)
    new.qkv, new.proj = m.qkv, m.proj
    new.relative_position_bias_table = m.relative_position_bias_table
    ref = m.relative_position_bias_table
    return new.to(device=ref.device)


class _SwinBlockHW(SwinTransformerBlock):
    """Detection/segmentation-style block: the caller sets `H`, `W` and calls `forward(x, mask_matrix)`.

    The mask argument is accepted for signature compatibility and not read: the op derives the same
    -100.0 shift mask over the padded map from region ids (verified by `swap`'s probe).
    """

    H: Optional[int] = None
    W: Optional[int] = None

    def forward(self, x: torch.Tensor, mask_matrix: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.H is None or self.W is None:
            raise ValueError("set block.H and block.W (the map size) before calling it, as the detection BasicLayer does")
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise ValueError(f"input must be [B, L, C], got {getattr(x, 'shape', type(x).__name__)}")
        B, L, C = x.shape
        if L != self.H * self.W:
            raise ValueError(f"input has L = {L} tokens but H x W = {self.H} x {self.W}")
        return self.forward_map(x.view(B, self.H, self.W, C)).reshape(B, L, C)


def _source_pad_order(cls) -> Optional[str]:
    """Order of the first `roll(` and `pad(` in the block's forward (and the methods it calls).

    Returns "roll_pad", "pad_roll", "no_pad" (rolls but never pads: official classification code),
    or None when the source is unavailable or shows neither.
    """
    try:
        src = inspect.getsource(cls.forward)
        for name in dict.fromkeys(re.findall(r"self\.(\w+)\(", src)):
            fn = getattr(cls, name, None)
            if inspect.isfunction(fn) and name != "forward":
                src += inspect.getsource(fn)
    except (OSError, TypeError):
        return None
    src = "\n".join(line.split("#", 1)[0] for line in src.splitlines())  # ignore comments
    roll, pad = src.find("roll("), re.search(r"\bpad\(", src)
    if roll < 0:
        return None
    if pad is None:
        return "no_pad"
    return "roll_pad" if roll < pad.start() else "pad_roll"


class _Probe:
    """Runs the foreign block and a candidate on the same random input, in eval mode, without grad."""

    def __init__(self, block: nn.Module):
        self.block = block
        ref = next(block.parameters())
        self.device, self.dtype = ref.device, ref.dtype
        self.tol = 1e-4 if ref.dtype in (torch.float32, torch.float64) else 2e-2
        self.gen = torch.Generator().manual_seed(0)

    def randn(self, *shape):
        return torch.randn(*shape, generator=self.gen).to(self.device, self.dtype)

    def close(self, a, b) -> bool:
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
            return False
        scale = b.detach().double().abs().max().clamp_min(1e-6)
        return bool(((a.double() - b.double()).abs().max() / scale) <= self.tol)

    def run(self, fn):
        modes = [(mod, mod.training) for mod in self.block.modules()]
        self.block.eval()
        try:
            with torch.no_grad():
                return fn()
        except Exception:  # the foreign block refused this input: not a match for this probe
            return None
        finally:
            for mod, mode in modes:
                mod.train(mode)


def _block_parts(m):
    """(attn, norm1, norm2, mlp, drop_path, window, shift) of a Swin v1 block, or None."""
    if isinstance(m, SwinTransformerBlock) or not isinstance(m, nn.Module):
        return None
    attn = getattr(m, "attn", None)
    if not (isinstance(attn, WindowAttention) or _is_foreign_window_attention(attn)):
        return None
    norm1, norm2, mlp = (getattr(m, n, None) for n in ("norm1", "norm2", "mlp"))
    if not all(isinstance(p, nn.Module) for p in (norm1, norm2, mlp)):
        return None
    # Extra children or own parameters (layer scale, post-norm variants ...) compute something else.
    if set(dict(m.named_children())) - _BLOCK_CHILDREN or any(True for _ in m.named_parameters(recurse=False)):
        return None
    window = _window_pair(getattr(m, "window_size", None))
    shift = getattr(m, "shift_size", None)
    try:
        shift = pair("shift_size", tuple(shift) if isinstance(shift, (list, tuple)) else shift, allow_zero=True)
    except (ValueError, TypeError):
        return None
    if window is None or window != _window_pair(attn.window_size):
        return None
    drop_path = getattr(m, "drop_path", None) or getattr(m, "drop_path1", None)
    return attn, norm1, norm2, mlp, drop_path, window, shift


def _plan_block(m) -> Optional[SwinTransformerBlock]:
    """Build a verified fastwin block for foreign block `m`, or None when it cannot be matched safely.

    The kind (detection `forward(x, mask_matrix)` with `H`/`W`, `[B, L, C]` official, `[B, H, W, C]`
    timm) and the pad/roll order are detected, and the candidate must reproduce `m` on random inputs:
    for detection blocks at a size not divisible by the window (so the order matters), for the others
    at their `input_resolution`.
    """
    parts = _block_parts(m)
    if parts is None:
        return None
    attn, norm1, norm2, mlp, drop_path, window, shift = parts
    params = list(inspect.signature(m.forward).parameters)
    detection = "mask_matrix" in params or (len(params) >= 2 and hasattr(m, "H") and hasattr(m, "W"))
    res = getattr(m, "input_resolution", None)
    if not detection and _window_pair(res) is None:
        return None
    order = _source_pad_order(type(m))
    orders = ["roll_pad"] if order == "no_pad" else [order] if order in PAD_ORDERS else list(PAD_ORDERS)
    probe = _Probe(m)
    new_attn = attn if isinstance(attn, WindowAttention) else _convert_window_attention(attn)
    C = new_attn.dim

    if detection:
        (wh, ww), sizes = window, [(window[0] + 3, window[1] + 5), (2 * window[0], window[1] + 1)]

        def call_orig(x, H, W):
            old = (getattr(m, "H", None), getattr(m, "W", None))
            m.H, m.W = H, W
            try:
                Hp, Wp = _ceil_div(H, wh) * wh, _ceil_div(W, ww) * ww
                mask_shift = shift if any(shift) else (wh // 2, ww // 2)  # what the parent layer passes
                mask = shift_mask(Hp, Wp, window, mask_shift, device=x.device, dtype=x.dtype)
                return m(x, mask)
            finally:
                m.H, m.W = old

        inputs = [(probe.randn(2, H * W, C), H, W) for H, W in sizes]
    else:
        H, W = _window_pair(res)
        x4 = probe.randn(2, H, W, C)
        y4 = probe.run(lambda: m(x4))
        nhwc = isinstance(y4, torch.Tensor) and y4.shape == x4.shape
        inputs = [(x4 if nhwc else x4.flatten(1, 2), H, W)]

        def call_orig(x, H, W):
            return m(x)

    expected = [probe.run(lambda i=i: call_orig(*i)) for i in inputs]
    if any(e is None for e in expected):
        return None
    for pad_order in orders:
        cls = _SwinBlockHW if detection else SwinTransformerBlock
        cand = cls.from_modules(new_attn, norm1, norm2, mlp, drop_path, window, shift,
                                None if detection else res, pad_order)
        ok = True
        for (x, H, W), want in zip(inputs, expected):
            if detection:
                cand.H, cand.W = H, W
            got = probe.run(lambda: cand(x))
            ok = ok and probe.close(got, want)
        if detection:
            cand.H, cand.W = getattr(m, "H", None), getattr(m, "W", None)
        if ok:
            return cand
    return None


# Plans are built in `matches` (the probe decides) and handed to `convert` without recomputing.
_PLANS: "weakref.WeakKeyDictionary[nn.Module, SwinTransformerBlock]" = weakref.WeakKeyDictionary()


def _matches_block(m) -> bool:
    if _block_parts(m) is None:
        return False
    plan = _plan_block(m)
    if plan is not None:
        _PLANS[m] = plan
    return plan is not None


def _convert_block(m) -> SwinTransformerBlock:
    plan = _PLANS.pop(m, None) or _plan_block(m)
    if plan is None:
        raise RuntimeError(f"swin_block: {type(m).__name__} no longer matches (changed since it was probed?)")
    return plan


register_swap("swin_block", _matches_block, _convert_block)
register_swap("swin_window_attention", _is_foreign_window_attention, _convert_window_attention)


# ---------------------------------------------------------------------------------------------- configs

def _cfg(input_size=224, crop_pct=0.9, **kwargs):
    return dict(input_size=(3, input_size, input_size), crop_pct=crop_pct, interpolation="bicubic",
                mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), num_classes=1000,
                first_conv="patch_embed.proj", classifier="head", **kwargs)


default_cfgs = {
    "swin_tiny_patch4_window7_224": _cfg(),
    "swin_small_patch4_window7_224": _cfg(),
    "swin_base_patch4_window7_224": _cfg(),
    "swin_base_patch4_window12_384": _cfg(384, crop_pct=1.0),
    "swin_large_patch4_window7_224": _cfg(),
    "swin_large_patch4_window12_384": _cfg(384, crop_pct=1.0),
}


def _create_swin(variant: str, model_args: dict, kwargs: dict) -> SwinTransformer:
    model = SwinTransformer(**{**model_args, **kwargs})
    model.pretrained_cfg = dict(default_cfgs[variant], architecture=variant)
    return model


# ------------------------------------------------------------------------------------------ entry points

@register_model
def swin_tiny_patch4_window7_224(**kwargs) -> SwinTransformer:
    """Swin-T, 224x224, window 7 (28.3M parameters)."""
    args = dict(patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
    return _create_swin("swin_tiny_patch4_window7_224", args, kwargs)


@register_model
def swin_small_patch4_window7_224(**kwargs) -> SwinTransformer:
    """Swin-S, 224x224, window 7 (49.6M parameters)."""
    args = dict(patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
    return _create_swin("swin_small_patch4_window7_224", args, kwargs)


@register_model
def swin_base_patch4_window7_224(**kwargs) -> SwinTransformer:
    """Swin-B, 224x224, window 7 (87.8M parameters)."""
    args = dict(patch_size=4, window_size=7, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
    return _create_swin("swin_base_patch4_window7_224", args, kwargs)


@register_model
def swin_base_patch4_window12_384(**kwargs) -> SwinTransformer:
    """Swin-B, 384x384, window 12."""
    args = dict(img_size=384, patch_size=4, window_size=12, embed_dim=128, depths=(2, 2, 18, 2),
                num_heads=(4, 8, 16, 32))
    return _create_swin("swin_base_patch4_window12_384", args, kwargs)


@register_model
def swin_large_patch4_window7_224(**kwargs) -> SwinTransformer:
    """Swin-L, 224x224, window 7 (196.5M parameters)."""
    args = dict(patch_size=4, window_size=7, embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))
    return _create_swin("swin_large_patch4_window7_224", args, kwargs)


@register_model
def swin_large_patch4_window12_384(**kwargs) -> SwinTransformer:
    """Swin-L, 384x384, window 12."""
    args = dict(img_size=384, patch_size=4, window_size=12, embed_dim=192, depths=(2, 2, 18, 2),
                num_heads=(6, 12, 24, 48))
    return _create_swin("swin_large_patch4_window12_384", args, kwargs)
