"""Hugging Face `transformers` Swin layers computed with fastwin's partition-free attention.

A swapped layer is an instance of a subclass of the layer's own transformers class
(`FastwinSwinLayer(FusedHFSwinLayer, SwinLayer)` ...) holding the very same submodules, attributes and
hooks, so parameter names, `state_dict()` keys and values, `isinstance` checks, gradient checkpointing
and transformers' output hooks stay as they were. Only `forward` changes: it runs
`fastwin.ops.shifted_window_attention` on the un-partitioned map instead of pad, roll, partition, mask,
attention, reverse, roll and crop, and hands the call to transformers' own `forward` (the original
computation) whenever it cannot reproduce it exactly (see `FusedHFSwinLayer.forward`).

The q / k / v Linears stay the source of truth: every forward concatenates their weights (and
biases) into the packed `[3C, C]` projection the op needs, channel order (q|k|v, heads, d), so nothing
is repacked in the model, loading a transformers checkpoint still works, and gradients reach the
original parameters. The concatenation copies 3 C^2 weights per layer call, small next to the
activations.

Three layouts (what the modules are called and how the residual branches are composed) are covered:
- `V1_SPLIT`: transformers 4.x `SwinLayer`, `DonutSwinLayer`, `MaskFormerSwinLayer` —
  `attention.self.{query,key,value,relative_position_bias_table}`, `attention.output.dense`,
  `intermediate` / `output`; pre-norm, drop path on the attention branch only;
- `V1_PROJ`: transformers 5.x `SwinLayer` — `attention.{q,k,v,o}_proj`,
  `attention.relative_position_bias`, `mlp`, a `dropout` after each branch; pre-norm, drop path on the
  attention branch only;
- `V2`: `Swinv2Layer` — cosine attention with `logit_scale` and the continuous position bias MLP,
  `query` / `key` (no bias) / `value`; post-norm, drop path on both branches.
All of them zero-pad the map to a multiple of the window *before* the cyclic shift ("pad_roll") and
build the -100 shift mask over the padded map, which is what the op computes for `pad_order="pad_roll"`.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from ..layers.swin_v2_block import cpb_bias_table, logit_multiplier

# transformers adds Swin V2's -100 shift mask twice (-200); the op adds it once. A masked pair's
# weight is at most exp(2 * tau + 16 - 100) of a row's weight sum (cosine logits lie in
# [-tau, tau], the position bias in (0, 16), and every query sees its own unmasked key), so up to
# N such pairs change an output by at most N * exp(2 * tau - 84) relative: kept below this.
V2_DOUBLE_MASK_TOLERANCE = 1e-8


@dataclasses.dataclass(frozen=True)
class Attention:
    """The parts of a transformers Swin attention that the fused op reads (the modules themselves).

    Attributes:
        q, k, v: the projections, each [C] -> [C] (a missing bias counts as zero).
        num_heads: heads; the per-head width is C // num_heads.
        window: (Wh, Ww) the position bias is built for.
        index: relative position index, [N, N] or [N * N] (checked to be the standard one).
        attn_drop_p: dropout probability on the attention weights now (0 outside training).
        table: [(2Wh-1)(2Ww-1), heads] V1 relative position bias table, or None (V2).
        scale: V1 logit scale, or None (V2).
        logit_scale: V2 learned log multipliers [heads, 1, 1], or None (V1).
        cpb_mlp, coords: V2 position-bias MLP and its log-spaced coordinates [1, 2Wh-1, 2Ww-1, 2].
    """

    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    num_heads: int
    window: Tuple[int, int]
    index: torch.Tensor
    attn_drop_p: float
    table: Optional[torch.Tensor] = None
    scale: Optional[float] = None
    logit_scale: Optional[torch.Tensor] = None
    cpb_mlp: Optional[nn.Module] = None
    coords: Optional[torch.Tensor] = None


def _dropout_p(m: nn.Module) -> float:
    return float(m.p) if m.training else 0.0


def _v1_split_attention(layer) -> Attention:
    s = layer.attention.self
    return Attention(s.query, s.key, s.value, s.num_attention_heads, tuple(s.window_size), s.relative_position_index,
                     _dropout_p(s.dropout), table=s.relative_position_bias_table,
                     scale=1.0 / math.sqrt(s.attention_head_size))


def _v1_proj_attention(layer) -> Attention:
    a = layer.attention
    bias = a.relative_position_bias
    return Attention(a.q_proj, a.k_proj, a.v_proj, a.num_attention_heads, tuple(bias.window_size),
                     bias.relative_position_index, float(a.attention_dropout) if a.training else 0.0,
                     table=bias.relative_position_bias_table, scale=float(a.scaling))


def _v2_attention(layer) -> Attention:
    s = layer.attention.self
    return Attention(s.query, s.key, s.value, s.num_attention_heads, tuple(s.window_size), s.relative_position_index,
                     _dropout_p(s.dropout), logit_scale=s.logit_scale, cpb_mlp=s.continuous_position_bias_mlp,
                     coords=s.relative_coords_table)


def _packed_projection(att: Attention) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """([3C, C] weight, [3C] bias or None): q, k, v stacked, as one `nn.Linear(C, 3C)` would hold them."""
    lins = (att.q, att.k, att.v)
    weight = torch.cat([lin.weight for lin in lins])
    if all(lin.bias is None for lin in lins):
        return weight, None
    bias = torch.cat([lin.bias if lin.bias is not None else weight.new_zeros(lin.out_features) for lin in lins])
    return weight, bias


def _fused_attention(att: Attention, x: torch.Tensor, window: int, shift: int, backend: Optional[str]) -> torch.Tensor:
    """(S)W-MSA of the un-partitioned map: [B, H, W, C] -> [B, H, W, C] (before the output projection)."""
    weight, bias = _packed_projection(att)
    qkv = F.linear(x, weight, bias)  # [B, H, W, 3C]; padded tokens carry `bias`, as inside the op
    bias = None if bias is None else bias.to(qkv.dtype)
    if att.logit_scale is not None:
        table, scale = cpb_bias_table(att.cpb_mlp, att.coords, att.num_heads), None
        multiplier = logit_multiplier(att.logit_scale, att.num_heads)
    else:
        table, scale, multiplier = att.table, att.scale, None
    return ops.shifted_window_attention(qkv, att.num_heads, window, shift, table.to(qkv.dtype), bias, scale,
                                        "pad_roll", att.attn_drop_p, logit_scale=multiplier, backend=backend)


# --------------------------------------------------------------------------- the three layer bodies
# Each mirrors its transformers forward call for call (same modules in the same order, so the same
# random numbers feed dropout and drop path in training), with the attention fused.

def _v1_split_body(layer, x: torch.Tensor, H: int, W: int, window: int, shift: int):
    B, L, C = x.shape
    normed = layer.layernorm_before(x).view(B, H, W, C)
    y = layer.attention.output(_fused_attention(_v1_split_attention(layer), normed, window, shift,
                                                layer.fastwin_backend), normed)
    h = x + layer.drop_path(y.reshape(B, L, C))
    return (h + layer.output(layer.intermediate(layer.layernorm_after(h))),)


def _v1_proj_body(layer, x: torch.Tensor, H: int, W: int, window: int, shift: int):
    B, L, C = x.shape
    normed = layer.layernorm_before(x).view(B, H, W, C)
    y = layer.attention.o_proj(_fused_attention(_v1_proj_attention(layer), normed, window, shift,
                                                layer.fastwin_backend))
    h = x + layer.drop_path(layer.dropout(y).reshape(B, L, C))
    return layer.dropout(layer.mlp(layer.layernorm_after(h))) + h, None  # (hidden_states, attention weights)


def _v2_body(layer, x: torch.Tensor, H: int, W: int, window: int, shift: int):
    B, L, C = x.shape
    grid = x.view(B, H, W, C)  # post-norm: the attention sees the un-normalized map
    y = layer.attention.output(_fused_attention(_v2_attention(layer), grid, window, shift, layer.fastwin_backend),
                               grid)
    h = x + layer.drop_path(layer.layernorm_before(y.reshape(B, L, C)))
    return (h + layer.drop_path(layer.layernorm_after(layer.output(layer.intermediate(h)))),)


@dataclasses.dataclass(frozen=True)
class Layout:
    """One family of transformers Swin layers: how to read its attention and run its body."""

    name: str
    attention: Callable[[nn.Module], Attention]
    body: Callable
    version: int  # 1 or 2


V1_SPLIT = Layout("v1_split", _v1_split_attention, _v1_split_body, 1)
V1_PROJ = Layout("v1_proj", _v1_proj_attention, _v1_proj_body, 1)
V2 = Layout("v2", _v2_attention, _v2_body, 2)
LAYOUTS = {layout.name: layout for layout in (V1_SPLIT, V1_PROJ, V2)}

# Keyword arguments the fused path may see and ignore (transformers passes them down to every layer).
_HARMLESS_KWARGS = {"output_hidden_states"}
_FUSABLE_ATTENTION = ("eager", "sdpa")  # transformers attention implementations the op reproduces


def _v2_mask_is_negligible(layer, att: Attention, window: int) -> bool:
    """Whether transformers' doubled V2 shift mask (-200) and the op's (-100) give the same outputs
    (see V2_DOUBLE_MASK_TOLERANCE). One host sync per change of `logit_scale`, cached."""
    ls = att.logit_scale
    try:
        key = (ls.data_ptr(), ls._version, window)
    except RuntimeError:  # an inference-mode tensor has no version counter: check every call
        key = None
    cached = layer.__dict__.get("_fastwin_v2_mask_check")
    if key is not None and cached is not None and cached[0] == key:
        return cached[1]
    tau = float(logit_multiplier(ls.detach(), att.num_heads).max())
    ok = window * window * math.exp(2 * tau - 84) <= V2_DOUBLE_MASK_TOLERANCE
    layer.__dict__["_fastwin_v2_mask_check"] = (key, ok)
    return ok


class FusedHFSwinLayer:
    """Mixin put in front of a transformers Swin layer class: the fused forward, the original as fallback.

    `fastwin_backend`: run this layer's attention on this backend (None: the thread's choice).
    """

    fastwin_backend: Optional[str] = None
    _fastwin_layout: Layout  # set on each generated class
    _fastwin_base: type  # the transformers class it extends
    _fastwin_signature: inspect.Signature  # of the base class's forward, without `self`
    _fastwin_var_keyword: Optional[str]  # the name of its `**kwargs`, if it has one

    def fastwin_fallback_reason(self, *args, **kwargs) -> Optional[str]:
        """Why this call would run transformers' own code instead of the fused path (None: it would not).

        Call-argument reasons only; the window checks need the layer's state after the call's window
        update, so `forward` makes them.
        """
        try:
            bound = self._fastwin_signature.bind(*args, **kwargs)
        except TypeError:
            return "arguments the layer does not take (transformers raises its own error)"
        return _argument_reason(self, dict(bound.arguments))

    def forward(self, *args, **kwargs):
        reason = self.fastwin_fallback_reason(*args, **kwargs)
        if reason is not None:
            return super().forward(*args, **kwargs)
        bound = self._fastwin_signature.bind(*args, **kwargs)
        x, (H, W) = bound.arguments["hidden_states"], bound.arguments["input_dimensions"]
        if not bound.arguments.get("always_partition", False) and hasattr(self, "set_shift_and_window_size"):
            self.set_shift_and_window_size((H, W))  # transformers' own (persistent) window update, as it does
        window, shift = self.window_size, self.shift_size
        layout = self._fastwin_layout
        att = layout.attention(self)
        if not (type(window) is int and type(shift) is int) or (window, window) != att.window:
            return super().forward(*args, **kwargs)  # a window its position bias was not built for
        if layout.version == 2 and shift > 0 and not _v2_mask_is_negligible(self, att, window):
            return super().forward(*args, **kwargs)
        return layout.body(self, x, H, W, window, shift)

    def __reduce_ex__(self, protocol):
        # The generated class is not importable by name: pickle (torch.save of the whole model,
        # multiprocessing) and deepcopy rebuild it from the transformers class and the layout.
        return _empty_fused, (self._fastwin_base, self._fastwin_layout.name), self.__getstate__()


def _argument_reason(layer, arguments: Dict) -> Optional[str]:
    """Why these call arguments need transformers' own code, or None."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return "TorchScript tracing or scripting"
    extra = dict(arguments.pop(layer._fastwin_var_keyword, None) or {})
    x, dims = arguments.pop("hidden_states", None), arguments.pop("input_dimensions", None)
    config = getattr(layer.attention, "config", None)
    wants_attentions = arguments.pop("output_attentions", extra.pop("output_attentions", None))
    if wants_attentions is None:
        wants_attentions = getattr(config, "output_attentions", False)
    if wants_attentions:
        return "output_attentions=True (the fused op does not form the attention weights)"
    if arguments.pop("head_mask", None) is not None or extra.pop("head_mask", None) is not None:
        return "a head_mask"
    arguments.pop("always_partition", None)
    unknown = sorted(set(arguments) | (set(extra) - _HARMLESS_KWARGS))
    if unknown:
        return f"arguments the fused path does not know: {unknown}"
    implementation = getattr(config, "_attn_implementation", None)
    if config is not None and implementation not in _FUSABLE_ATTENTION and layer._fastwin_layout is V1_PROJ:
        return f"attention implementation {implementation!r}"
    if not (isinstance(x, torch.Tensor) and x.dim() == 3 and _two_ints(dims) and x.shape[1] == dims[0] * dims[1]):
        return "an input that is not [B, H * W, C] with (H, W) (transformers raises its own error)"
    return None


def _two_ints(dims) -> bool:
    return isinstance(dims, (tuple, list)) and len(dims) == 2 and all(type(d) is int and d > 0 for d in dims)


_CLASSES: Dict[type, type] = {}


def fused_class(base: type, layout: Layout) -> type:
    """`Fastwin<Base>`: `FusedHFSwinLayer` in front of transformers layer class `base` (one per base)."""
    cls = _CLASSES.get(base)
    if cls is None:
        doc = (f"`{base.__module__}.{base.__qualname__}` computed with fastwin's fused window attention "
               f"({layout.name} layout); see `fastwin.swap.hf_swin_layers`.")
        sig = inspect.signature(base.forward)
        sig = sig.replace(parameters=list(sig.parameters.values())[1:])
        var_kw = next((p.name for p in sig.parameters.values() if p.kind is p.VAR_KEYWORD), None)
        cls = type(f"Fastwin{base.__name__}", (FusedHFSwinLayer, base),
                   {"__doc__": doc, "__module__": __name__, "_fastwin_layout": layout, "_fastwin_signature": sig,
                    "_fastwin_var_keyword": var_kw, "_fastwin_base": base})
        _CLASSES[base] = cls
    return cls


def _empty_fused(base: type, layout_name: str) -> nn.Module:
    """An uninitialised `fused_class` instance (unpickling fills its state)."""
    cls = fused_class(base, LAYOUTS[layout_name])
    return cls.__new__(cls)


def fused_copy(layer: nn.Module, layout: Layout) -> nn.Module:
    """A `fused_class` instance holding `layer`'s own submodules, parameters, buffers, hooks and settings.

    The module's bookkeeping dicts are copied (not shared), so replacing a child of one does not
    change the other; the children and tensors themselves are the same objects.
    """
    cls = fused_class(type(layer), layout)
    new = cls.__new__(cls)
    for key, value in layer.__dict__.items():
        new.__dict__[key] = type(value)(value) if isinstance(value, (dict, set)) else value
    new.__dict__.pop("_fastwin_v2_mask_check", None)
    return new

