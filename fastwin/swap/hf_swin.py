"""Swap rules for Hugging Face `transformers` Swin v1 / V2 layers (`SwinModel`, `Swinv2Model`,
`DonutSwinModel`, `MaskFormerSwinModel`, their heads and backbones).

A transformers Swin layer is recognised by structure (module names, shapes, the standard relative
position index), never by class name and without importing transformers. It is replaced by
`hf_swin_layers.fused_copy` (its own class with fastwin's forward in front, the same submodules) only
after a probe: a CPU twin with random weights, and drop path / dropout replaced by fixed scalings so
their placement shows, must give the same output through transformers' forward and the fused one, at
two map sizes that need padding. A layer that fails the probe, or lives on the meta device, is left as
it was and the report says why. What a replaced layer hands back to transformers' own code at call
time is listed in the report's notes (`NOTE_V1`, `NOTE_V2`).
"""
from __future__ import annotations

import copy
import inspect
from typing import Optional, Union

import torch
import torch.nn as nn

from .. import ops
from ..ops import relative_position_index
from .core import randomize_parameters_, register_planned_swap
from .hf_swin_layers import V1_PROJ, V1_SPLIT, V2, FusedHFSwinLayer, Layout, fused_copy

_COMMON = ("output_attentions=True, a head_mask, keyword arguments it does not know, TorchScript tracing, and a "
           "window shrunk below the one its position bias was built for (transformers' small-input rule)")
NOTE_V1 = (f"runs transformers' own code at call time for {_COMMON}, and for an attention implementation other "
           f"than eager / sdpa")
NOTE_V2 = (f"runs transformers' own code at call time for {_COMMON}, and in shifted layers whose logit multiplier "
           f"is so large (above ~30) that transformers' doubled shift mask could show")

_PROBE_TOL = 1e-4  # relative to the largest output; random fp32 weights


# ----------------------------------------------------------------------------------------- recognition

def _has(m, names, kind=nn.Module) -> bool:
    return all(isinstance(getattr(m, n, None), kind) for n in names)


def _children_within(m, allowed) -> bool:
    return set(dict(m.named_children())) <= set(allowed)


def _own_params_within(m, allowed) -> bool:
    return {n for n, _ in m.named_parameters(recurse=False)} <= set(allowed)


def _square_linears(lins, dim: int) -> bool:
    return all(isinstance(lin, nn.Linear) and lin.in_features == dim and lin.out_features == dim for lin in lins)


def _standard_index(index, window) -> bool:
    """A relative position index equal to the standard one ([N, N] or flat); a meta one has no values."""
    want = relative_position_index(window).flatten()
    if not isinstance(index, torch.Tensor) or index.numel() != want.numel():
        return False
    return index.is_meta or torch.equal(index.detach().flatten().cpu().long(), want)


def _layer_shell(m) -> bool:
    """What every transformers Swin layer has: the norms, attention, drop path and int window / shift."""
    if not _has(m, ("layernorm_before", "layernorm_after"), nn.LayerNorm) or not _has(m, ("attention", "drop_path")):
        return False
    window, shift = getattr(m, "window_size", None), getattr(m, "shift_size", None)
    if not (type(window) is int and type(shift) is int and 0 <= shift < window):
        return False
    try:
        params = inspect.signature(type(m).forward).parameters
    except (TypeError, ValueError):
        return False
    return list(params)[1:3] == ["hidden_states", "input_dimensions"]


def _v1_attention_ok(heads, head_dim, window, table, index) -> bool:
    wh, ww = window
    return (isinstance(table, nn.Parameter) and tuple(table.shape) == ((2 * wh - 1) * (2 * ww - 1), heads)
            and _standard_index(index, window) and isinstance(heads, int) and heads > 0 and head_dim > 0)


def _is_v1_split(m) -> bool:
    att = m.attention
    s, out = getattr(att, "self", None), getattr(att, "output", None)
    if not (isinstance(s, nn.Module) and isinstance(out, nn.Module) and _has(out, ("dense",), nn.Linear)):
        return False
    if not _has(m, ("intermediate", "output")):
        return False
    if not _children_within(m, {"layernorm_before", "attention", "drop_path", "layernorm_after", "intermediate",
                                "output"}) or not _children_within(att, {"self", "output"}):
        return False
    if not _children_within(s, {"query", "key", "value", "dropout"}) or not _has(s, ("dropout",), nn.Dropout):
        return False
    if not _own_params_within(s, {"relative_position_bias_table"}) or hasattr(s, "logit_scale"):
        return False
    heads, head_dim = getattr(s, "num_attention_heads", None), getattr(s, "attention_head_size", 0)
    window = tuple(getattr(s, "window_size", ()))
    if len(window) != 2 or window != (m.window_size, m.window_size) or not isinstance(heads, int):
        return False
    dim = m.layernorm_before.normalized_shape[0]
    return (_square_linears((s.query, s.key, s.value, out.dense), dim) and heads * head_dim == dim
            and _v1_attention_ok(heads, head_dim, window, s.relative_position_bias_table, s.relative_position_index))


def _is_v1_proj(m) -> bool:
    att = m.attention
    bias = getattr(att, "relative_position_bias", None)
    if not (_has(att, ("q_proj", "k_proj", "v_proj", "o_proj"), nn.Linear) and isinstance(bias, nn.Module)):
        return False
    if not _has(m, ("mlp",)) or not _has(m, ("dropout",), nn.Dropout):
        return False
    if not _children_within(m, {"layernorm_before", "attention", "drop_path", "layernorm_after", "mlp", "dropout"}):
        return False
    if not _children_within(att, {"q_proj", "k_proj", "v_proj", "o_proj", "relative_position_bias"}):
        return False
    if not (_own_params_within(att, ()) and _children_within(bias, ()) and _own_params_within(
            bias, {"relative_position_bias_table"})):
        return False
    heads, head_dim, scaling = (getattr(att, n, None) for n in ("num_attention_heads", "head_dim", "scaling"))
    window = tuple(getattr(bias, "window_size", ()))
    if not isinstance(heads, int) or not isinstance(head_dim, int) or not isinstance(scaling, (int, float)):
        return False
    if len(window) != 2 or window != (m.window_size, m.window_size) or getattr(att, "is_causal", False):
        return False
    dim = m.layernorm_before.normalized_shape[0]
    return (_square_linears((att.q_proj, att.k_proj, att.v_proj, att.o_proj), dim) and heads * head_dim == dim
            and isinstance(getattr(att, "attention_dropout", None), (int, float))
            and _v1_attention_ok(heads, head_dim, window, bias.relative_position_bias_table,
                                 bias.relative_position_index))


def _is_cpb_mlp(mlp, heads: int) -> bool:
    """Linear(2, hidden) -> ReLU -> Linear(hidden, heads, no bias), the V2 position-bias MLP."""
    if not isinstance(mlp, nn.Sequential) or len(mlp) != 3:
        return False
    first, act, last = mlp
    return (isinstance(first, nn.Linear) and first.in_features == 2 and isinstance(act, nn.ReLU)
            and isinstance(last, nn.Linear) and last.in_features == first.out_features and last.out_features == heads)


def _is_v2(m) -> bool:
    att = m.attention
    s, out = getattr(att, "self", None), getattr(att, "output", None)
    if not (isinstance(s, nn.Module) and isinstance(out, nn.Module) and _has(out, ("dense",), nn.Linear)):
        return False
    if not _has(m, ("intermediate", "output")) or not _children_within(att, {"self", "output"}):
        return False
    if not _children_within(m, {"layernorm_before", "attention", "drop_path", "layernorm_after", "intermediate",
                                "output"}):
        return False
    if not _children_within(s, {"continuous_position_bias_mlp", "query", "key", "value", "dropout"}):
        return False
    if not _own_params_within(s, {"logit_scale"}) or not _has(s, ("dropout",), nn.Dropout):
        return False
    heads = getattr(s, "num_attention_heads", None)
    window = tuple(getattr(s, "window_size", ()))
    if not isinstance(heads, int) or heads <= 0 or len(window) != 2 or window != (m.window_size, m.window_size):
        return False
    dim = m.layernorm_before.normalized_shape[0]
    scale, coords = getattr(s, "logit_scale", None), getattr(s, "relative_coords_table", None)
    wh, ww = window
    return (_square_linears((s.query, s.key, s.value, out.dense), dim) and dim % heads == 0
            and isinstance(scale, nn.Parameter) and scale.numel() == heads
            and _is_cpb_mlp(s.continuous_position_bias_mlp, heads)
            and isinstance(coords, torch.Tensor) and tuple(coords.shape) == (1, 2 * wh - 1, 2 * ww - 1, 2)
            and _standard_index(s.relative_position_index, window))


def _layout_of(m, version: int) -> Optional[Layout]:
    """The layout of transformers Swin layer `m` of this version (1 or 2), or None."""
    if isinstance(m, FusedHFSwinLayer) or not isinstance(m, nn.Module) or not _layer_shell(m):
        return None
    checks = ((V1_PROJ, _is_v1_proj), (V1_SPLIT, _is_v1_split)) if version == 1 else ((V2, _is_v2),)
    return next((layout for layout, ok in checks if ok(m)), None)


# ------------------------------------------------------------------------------------------------ probe

class _Scale(nn.Module):
    """A fixed stand-in for dropout / drop path in the probe: where it is applied shows in the output."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def _random_twin(m: nn.Module) -> nn.Module:
    """A CPU fp32 copy of layer `m` with random weights (norms around 1, V2 multipliers around 10) and
    drop path (x0.5) / the layer's own dropout (x0.75) as fixed scalings; in eval mode."""
    twin = copy.deepcopy(m).cpu().float().eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        randomize_parameters_(twin, gen)
    twin.drop_path = _Scale(0.5)
    if isinstance(getattr(twin, "dropout", None), nn.Dropout):
        twin.dropout = _Scale(0.75)
    config = getattr(twin.attention, "config", None)  # the twin's own (deep) copy
    if config is not None and getattr(config, "_attn_implementation", None) not in ("eager", "sdpa"):
        config._attn_implementation = "eager"
    return twin


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _close(a, b) -> bool:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return False
    scale = b.double().abs().max().clamp_min(1e-6)
    return bool(((a.double() - b.double()).abs().max() / scale) <= _PROBE_TOL)


def _plan(m: nn.Module, version: int) -> Union[nn.Module, str, None]:
    """The fused layer for `m`, or why it is left as it was (a string), or None if it is not one."""
    layout = _layout_of(m, version)
    if layout is None:
        return None
    if any(t.is_meta for t in m.parameters()) or any(t.is_meta for t in m.buffers()):
        return "on the meta device (nothing to probe; swap after loading the weights)"
    twin = _random_twin(m)
    cand = fused_copy(twin, layout)
    cand.fastwin_backend = "reference"  # the probe checks the rule, not a backend
    ws, C = twin.window_size, twin.layernorm_before.normalized_shape[0]
    gen = torch.Generator().manual_seed(1)
    for H, W in ((ws + 3, 2 * ws + 1), (2 * ws, ws + 1)):  # larger than the window, padded in some dim
        x = torch.randn(2, H * W, C, generator=gen)
        try:
            with torch.no_grad(), ops.record() as calls:
                want, got = _first(twin(x, (H, W))), _first(cand(x, (H, W)))
        except Exception as exc:  # noqa: BLE001  (either refusing a probe input means: no match)
            return f"the probe failed ({type(exc).__name__}: {exc})"
        if not calls:
            return "its forward would always run transformers' own code"
        if not _close(got, want):
            return "the fused path did not reproduce it on a random input"
    return fused_copy(m, layout)


register_planned_swap("hf_swin_layer", lambda m: _layout_of(m, 1), lambda m: _plan(m, 1), note=NOTE_V1)
register_planned_swap("hf_swinv2_layer", lambda m: _layout_of(m, 2), lambda m: _plan(m, 2), note=NOTE_V2)
