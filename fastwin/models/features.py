"""timm's backbone surface for fastwin models: `forward_intermediates` helpers, `feature_info`, and the
`features_only` wrapper `create_model` returns.

A model family provides
    feature_info: list of dicts {num_chs, reduction, module} (one per stage or block, timm's keys)
    forward_intermediates(x, indices=None, norm=False, stop_early=False, output_fmt=..., intermediates_only=False)
    prune_intermediate_layers(indices, prune_norm=False, prune_head=True) -> absolute indices kept
and `FeatureMaps` turns such a model into a backbone returning the selected maps, as timm's
`features_only=True` models do (`FeatureInfo` on `.feature_info`, `channels()`, `reduction()` ...).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..utils import fx_proxy

__all__ = ["FEATURE_CLASSES", "FeatureGraph", "FeatureInfo", "FeatureMaps", "OUTPUT_FORMATS", "feature_backbone",
           "feature_class", "feature_take_indices", "to_format"]

Indices = Optional[Union[int, Sequence[int]]]
OUTPUT_FORMATS = ("NCHW", "NHWC")


def feature_take_indices(num_features: int, indices: Indices = None) -> Tuple[List[int], int]:
    """Absolute indices to take out of `num_features` stages/blocks, and the largest one.

    Args:
        indices: None (all), an int n (the last n) or a sequence of indices (negative ones count
            from the end), timm's convention.
    Raises:
        ValueError: an index (or n) out of range.
    """
    if indices is None:
        indices = num_features
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= num_features:
            raise ValueError(f"indices: take the last n with 1 <= n <= {num_features}, got {indices}")
        take = list(range(num_features - indices, num_features))
    else:
        take = []
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int):
                raise ValueError(f"indices must be an int or a sequence of ints, got {indices!r}")
            idx = num_features + i if i < 0 else i
            if not 0 <= idx < num_features:
                raise ValueError(f"feature index {i} is out of range for {num_features} features")
            take.append(idx)
        if not take:
            raise ValueError("indices must select at least one feature")
    return take, max(take)


def check_image(x, in_chans: int, model: Optional[nn.Module] = None) -> None:
    """TypeError / ValueError unless `x` is a [B, in_chans, H, W] tensor (before any layer runs).

    With `model`, `x` must also be floating point, of the model's parameter dtype (any dtype under
    autocast, which casts it) and on their device: a uint8 or fp64 image is refused here, by name,
    instead of failing inside the first convolution.

    Skipped for a torch.fx Proxy (`fastwin.utils.fx_proxy`): tracing has no shape to check; the
    traced graph keeps the fused ops as calls, which check the tensors they get.
    """
    if fx_proxy(x):
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"input must be [B, {in_chans}, H, W], got shape {tuple(x.shape)}")
    if model is None:
        return
    name = type(model).__name__
    if not x.is_floating_point():
        raise TypeError(f"input must be a floating-point image for {name}, got dtype {x.dtype} "
                        "(convert and normalize it first, e.g. `x.float() / 255`)")
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    if weight is None:
        return
    if x.device != weight.device:
        raise TypeError(f"input is on {x.device} but the weights of {name} are on {weight.device}")
    # autocast casts fp32 (and the lower-precision dtype itself) to its dtype, never fp64
    dev = x.device.type
    autocast = (torch.float32, torch.get_autocast_dtype(dev)) if torch.is_autocast_enabled(dev) else ()
    if x.dtype != weight.dtype and x.dtype not in autocast:
        hint = " (autocast casts float32 inputs only)" if autocast else " (or run under torch.autocast)"
        raise TypeError(f"input has dtype {x.dtype} but the weights of {name} are {weight.dtype}; cast one of "
                        f"them{hint}")


def check_output_fmt(output_fmt: str, allowed: Sequence[str] = OUTPUT_FORMATS) -> str:
    if output_fmt not in allowed:
        raise ValueError(f"output_fmt must be one of {tuple(allowed)}, got {output_fmt!r}")
    return output_fmt


def to_format(x: torch.Tensor, layout: str, output_fmt: str) -> torch.Tensor:
    """A 4-D map in `layout` ("NCHW" or "NHWC") -> contiguous in `output_fmt`."""
    if layout != output_fmt:
        x = x.permute(0, 3, 1, 2) if layout == "NHWC" else x.permute(0, 2, 3, 1)
    return x.contiguous()


class FeatureInfo:
    """Per-feature metadata of a backbone (timm's `FeatureInfo` interface).

    `info` holds one dict per stage/block of the full model (`num_chs`, `reduction`, `module`,
    `index`); accessors return the entries of `out_indices` unless `idx` is given.
    """

    def __init__(self, info: List[Dict], out_indices: Sequence[int]):
        self.info = [dict(d, index=i) for i, d in enumerate(info)]
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: Optional[Union[int, Sequence[int]]] = None):
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (list, tuple)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: Optional[Sequence[str]] = None, idx=None):
        rows = [self.info[i] for i in (self.out_indices if idx is None else
                                       idx if isinstance(idx, (list, tuple)) else [idx])]
        rows = rows if keys is None else [{k: r[k] for k in keys} for r in rows]
        return rows if idx is None or isinstance(idx, (list, tuple)) else rows[0]

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)

    def __getitem__(self, item):
        return self.info[item]

    def __len__(self):
        return len(self.info)

    def __repr__(self):
        return f"FeatureInfo(out_indices={self.out_indices}, channels={self.channels()}, reduction={self.reduction()})"


class FeatureMaps(nn.Module):
    """A fastwin model as a backbone: `forward(x)` returns the list of selected feature maps.

    What `create_model(name, features_only=True, out_indices=..., output_fmt=...)` returns (weights
    given to `create_model` load into the full model before it is wrapped). The wrapped model, under
    `.model` as in timm's `FeatureGetterNet`, is pruned to what the selected features need: later
    stages, the head and, unless `norm`, the final norm are dropped.

    Args:
        model: a model with `forward_intermediates`, `prune_intermediate_layers` and `feature_info`.
        out_indices: which features (see `feature_take_indices`); default: the model's
            `default_out_indices` (every stage for hierarchical models, the last 3 blocks for ViT).
        output_fmt: "NCHW" or "NHWC" (default: the model's native layout, `model.output_fmt`).
        norm: apply the model's final norm to the last stage's map (timm's `norm`).
        as_dict: return a dict {module name with "_" for ".": map} (timm's `feature_cls="dict"`).
    """

    def __init__(self, model: nn.Module, out_indices: Indices = None, output_fmt: Optional[str] = None,
                 norm: bool = False, as_dict: bool = False):
        super().__init__()
        for attr in ("forward_intermediates", "prune_intermediate_layers", "feature_info"):
            if not hasattr(model, attr):
                raise TypeError(f"{type(model).__name__} has no {attr}; it cannot be used with features_only")
        if out_indices is None:
            out_indices = getattr(model, "default_out_indices", len(model.feature_info))
        self.output_fmt = check_output_fmt(output_fmt or getattr(model, "output_fmt", "NCHW"))
        self.norm = norm
        self.as_dict = as_dict
        full_info = list(model.feature_info)
        self.out_indices = tuple(model.prune_intermediate_layers(out_indices, prune_norm=not norm, prune_head=True))
        self.feature_info = FeatureInfo(full_info, self.out_indices)
        self.return_names = tuple(full_info[i]["module"].replace(".", "_") for i in self.out_indices)
        self.pretrained_cfg = self.default_cfg = features_cfg(getattr(model, "pretrained_cfg", None))
        self.model = model

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor) -> Union[List[torch.Tensor], Dict[str, torch.Tensor]]:
        maps = self.model.forward_intermediates(x, indices=self.out_indices, norm=self.norm,
                                                output_fmt=self.output_fmt, intermediates_only=True)
        return dict(zip(self.return_names, maps)) if self.as_dict else maps

    def extra_repr(self):
        return f"out_indices={self.out_indices}, output_fmt={self.output_fmt!r}, norm={self.norm}"


class FeatureGraph(nn.Module):
    """A `FeatureMaps` backbone as torch.fx graphs (timm's `feature_cls="fx"`, `FeatureGraphNet`).

    `graph_module` is `torch.fx.symbolic_trace` of the backbone in training mode; a second graph
    traced in eval mode runs when the module is in eval mode (tracing fixes train/eval branches such
    as dropout rates and stochastic depth, so one graph per mode, as torchvision's
    `create_feature_extractor`). Both graphs hold the backbone's own modules and parameters (not
    copies); the fused ops are leaf calls. forward: as `FeatureMaps`.
    """

    def __init__(self, backbone: FeatureMaps):
        super().__init__()
        for attr in ("feature_info", "out_indices", "output_fmt", "pretrained_cfg", "default_cfg"):
            setattr(self, attr, getattr(backbone, attr))
        mode = backbone.training
        self.graph_module = torch.fx.symbolic_trace(backbone.train())
        self.__dict__["_eval_graph"] = torch.fx.symbolic_trace(backbone.eval())  # not a second set of parameters
        backbone.train(mode)
        self.train(mode)

    def _apply(self, fn, *args, **kwargs):
        # `.to()`, `.double()` ...: parameters are shared, but each graph keeps its own buffer references
        super()._apply(fn, *args, **kwargs)
        self.__dict__["_eval_graph"]._apply(fn, *args, **kwargs)
        return self

    def forward(self, x: torch.Tensor):
        return (self.graph_module if self.training else self.__dict__["_eval_graph"])(x)


FEATURE_CLASSES = ("getter", "list", "hook", "dict", "fx")
_TIMM_ONLY_OPTIONS = ("flatten_sequential", "no_rewrite")  # module rewriting options of timm's wrappers


def feature_class(name: Optional[str]) -> str:
    """timm's `feature_cls` name -> what fastwin builds: "list", "dict" or "fx".

    timm's "getter" (`forward_intermediates`), "list" (its default) and "hook" (forward hooks; any
    name containing "hook", as timm) give the same list of maps here; "dict" the same maps keyed
    by module name; "fx" a torch.fx graph of them.
    Raises:
        TypeError: not a string (fastwin builds its own backbone; it cannot wrap in a timm class).
        ValueError: another name.
    """
    if name is None:
        return "list"
    if not isinstance(name, str):
        raise TypeError(f"feature_cls must be one of {FEATURE_CLASSES} (timm's names), got {name!r}: fastwin builds "
                        "its own backbone and cannot wrap the model in another class")
    key = name.lower()
    if "hook" in key or key in ("getter", "list"):
        return "list"
    if key in ("dict", "fx"):
        return key
    raise ValueError(f"feature_cls must be one of {FEATURE_CLASSES} (timm's names), got {name!r}")


def features_cfg(cfg: Optional[dict]) -> Optional[dict]:
    """A backbone's pretrained config: the model's without classifier entries (as timm's)."""
    if cfg is None:
        return None
    return {k: v for k, v in cfg.items() if k not in ("num_classes", "classifier", "global_pool")}


def feature_backbone(model: nn.Module, feature_cls: Optional[str] = None, out_indices: Indices = None,
                     output_fmt: Optional[str] = None, **feature_cfg) -> nn.Module:
    """`model` as the backbone `create_model(..., features_only=True, feature_cls=...)` returns.

    `feature_cfg`: `FeatureMaps` options (`norm`); timm's `out_indices` / `output_fmt` entries are
    taken too, its module-rewriting options (`flatten_sequential`, `no_rewrite`) ignored.
    """
    kind = feature_class(feature_cls)
    for key in _TIMM_ONLY_OPTIONS:
        feature_cfg.pop(key, None)
    out_indices = feature_cfg.pop("out_indices", out_indices)
    output_fmt = feature_cfg.pop("output_fmt", output_fmt)
    backbone = FeatureMaps(model, out_indices, output_fmt, as_dict=kind == "dict", **feature_cfg)
    return FeatureGraph(backbone) if kind == "fx" else backbone
