"""Model registry: `register_model`, `create_model`, `list_models` (timm-style names and arguments).

`create_model` accepts timm's model-building arguments as well as fastwin's `checkpoint=`:
- names may carry a pretrained tag (`swin_tiny_patch4_window7_224.ms_in22k`): for the names fastwin
  shares with timm it selects that tag's config as timm does (`pretrained_tags.TAGS`, generated from
  timm: num_classes, input size, mean/std, crop, interpolation ...), and an unknown tag is refused;
  without a tag, timm's default tag applies;
- `pretrained=True` loads the file named by `pretrained_cfg_overlay=dict(file=...)` (timm's
  convention for local weights; `.pth`/`.bin` torch files or `.safetensors`). fastwin bundles and
  downloads no weights, so without a file it fails and says so;
- `features_only=True` (with `out_indices`, `output_fmt`, `feature_cls`, `feature_cfg=dict(norm=...)`)
  returns the model as a backbone (`fastwin.models.features`) giving per-stage maps; it carries
  `pretrained_cfg` / `default_cfg` without the classifier entries, as timm's backbones.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
import os
from typing import Callable, Dict, List, Optional

import torch.nn as nn

from .pretrained_tags import TAGS

_MODELS: Dict[str, Callable] = {}
_CFGS: Dict[str, dict] = {}

# Keys every model's `pretrained_cfg` carries (timm's names; `resolve_data_config` reads them).
PRETRAINED_CFG_KEYS = ("architecture", "tag", "file", "input_size", "fixed_input_size", "interpolation", "crop_pct",
                       "crop_mode", "mean", "std", "num_classes", "pool_size", "first_conv", "classifier")

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
IMAGENET_INCEPTION_MEAN = (0.5, 0.5, 0.5)
IMAGENET_INCEPTION_STD = (0.5, 0.5, 0.5)


def register_model(fn: Callable) -> Callable:
    """Decorator: register an entry point under its function name.

    The registered (and returned) function attaches the name's default config from
    `register_pretrained_cfgs` as `model.pretrained_cfg` unless the entry point set one, with timm's
    default tag's entries (`pretrained_tags.TAGS`) for names timm has.
    """
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")

    @functools.wraps(fn)
    def entry(**kwargs):
        model = fn(**kwargs)
        cfg = getattr(model, "pretrained_cfg", None) or _CFGS.get(name)
        if cfg is not None:
            with_pretrained_cfg(model, name, with_tag(cfg, *tag_cfg(name)))
        return model

    _MODELS[name] = entry
    return entry


def register_pretrained_cfgs(cfgs: Dict[str, dict]) -> None:
    """Register default pretrained configs (`pretrained_cfg(...)` dicts) by model name."""
    _CFGS.update(cfgs)


def list_models(pattern: str = "*") -> List[str]:
    """Sorted names of registered models matching a glob `pattern`."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def pretrained_cfg(input_size=224, crop_pct=0.9, interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN,
                   std=IMAGENET_DEFAULT_STD, num_classes=1000, first_conv="patch_embed.proj", classifier="head",
                   pool_size=None, tag="", **extra) -> dict:
    """A default pretrained config (timm's keys) for an entry point.

    Args:
        input_size: side of the square training input (the config holds `(3, s, s)`).
        crop_pct, interpolation, mean, std: evaluation preprocessing.
        num_classes: classes of the released weights. first_conv, classifier: module names
            (classifier may be a tuple, e.g. DeiT distilled `("head", "head_dist")`).
        pool_size: final feature-map size at `input_size`, where there is one.
        tag: the default pretrained tag (timm's `name.tag`).
    """
    size = (3, input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    cfg = dict(architecture="", tag=tag, file=None, input_size=size, fixed_input_size=False,
               interpolation=interpolation, crop_pct=crop_pct, crop_mode="center", mean=tuple(mean), std=tuple(std),
               num_classes=num_classes, pool_size=pool_size, first_conv=first_conv, classifier=classifier)
    cfg.update(extra)
    return cfg


def with_pretrained_cfg(model: nn.Module, variant: str, cfg: dict) -> nn.Module:
    """Attach `cfg` (a copy, `architecture` = variant) to `model` as `model.pretrained_cfg`."""
    model.pretrained_cfg = dict(cfg, architecture=variant)
    model.default_cfg = model.pretrained_cfg  # timm's older name for the same dict
    return model


def split_model_name_tag(name: str):
    """`"arch.tag"` -> ("arch", "tag"); `"arch"` -> ("arch", "")."""
    arch, _, tag = name.partition(".")
    return arch, tag


def tag_cfg(arch: str, tag: str = ""):
    """(tag, config entries) timm's `arch.tag` sets; `tag=""`: timm's default tag.

    For names timm does not have (UniFormer) the tag is only recorded: ("tag", {}).
    Raises:
        ValueError: a tag timm does not have for `arch`.
    """
    tags = TAGS.get(arch)
    if tags is None:
        return tag, {}
    if not tag:
        tag = next(iter(tags))
    if tag not in tags:
        raise ValueError(f"unknown pretrained tag {tag!r} for {arch}; timm's tags: {list(tags)}")
    return tag, dict(tags[tag])


def with_tag(cfg: dict, tag: str, entries: dict) -> dict:
    """`cfg` with a tag's entries (`tag_cfg`): tag-specific keys of another tag (a test size ...) go."""
    out = {k: v for k, v in cfg.items() if k in PRETRAINED_CFG_KEYS or k not in _TAG_KEYS}
    out.update(entries)
    if tag:
        out["tag"] = tag
    return out


_TAG_KEYS = {k for tags in TAGS.values() for entries in tags.values() for k in entries}


def _defaults_from_cfg(cfg: dict, kwargs: dict) -> None:
    """timm's rule: the config sets `num_classes` and `in_chans` (and `img_size` when the config
    says `fixed_input_size`) unless the caller passed them."""
    if cfg.get("num_classes") is not None and cfg["num_classes"] >= 0:
        kwargs.setdefault("num_classes", cfg["num_classes"])
    size = cfg.get("input_size")
    if size is not None:
        kwargs.setdefault("in_chans", size[0])
        if cfg.get("fixed_input_size"):
            kwargs.setdefault("img_size", tuple(size[-2:]))


def _read_weights(path):
    """A `.safetensors` file as a state dict; anything else (a torch file, a state dict) as it is."""
    if not isinstance(path, (str, os.PathLike)):
        return path
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise ImportError(f"reading {path!r} needs the safetensors package (pip install safetensors)") from exc
        return load_file(path, device="cpu")
    return path


def _classifier_prefixes(model: nn.Module, cfg: dict):
    heads = cfg.get("classifier") or ()
    return (heads,) if isinstance(heads, str) else tuple(heads)


def load_pretrained(model: nn.Module, file) -> nn.Module:
    """Load released weights from `file` (a path or a state dict) into `model`, strictly except for
    the classifier.

    As timm's `pretrained=True`: when the model's classifier does not fit the file's (another
    `num_classes`, or none), the classifier entries are left out and the model keeps its freshly
    initialized head; every other key must fit (`load_checkpoint`'s rules and messages).
    """
    from .checkpoint import DERIVED_BUFFERS, _filter_for, _read, load_checkpoint

    sd = _read(_read_weights(file))
    sd = {k: v for k, v in sd.items() if k.rsplit(".", 1)[-1] not in DERIVED_BUFFERS}
    fn = _filter_for(model)
    if fn is not None:
        sd = dict(fn(sd, model))
    expected = model.state_dict()
    heads = _classifier_prefixes(model, getattr(model, "pretrained_cfg", {}) or {})

    def under_head(k):
        return any(k == h or k.startswith(h + ".") for h in heads)

    mismatch = [k for k in sd if under_head(k) and (k not in expected or sd[k].shape != expected[k].shape)]
    mismatch += [k for k in expected if under_head(k) and k not in sd]
    if mismatch:
        for k in [k for k in sd if under_head(k)]:
            del sd[k]
        sd.update({k: v for k, v in expected.items() if under_head(k)})  # keep the new head as initialized
    return load_checkpoint(model, sd)


def create_model(name: str, checkpoint=None, pretrained: bool = False, pretrained_cfg: Optional[dict] = None,
                 pretrained_cfg_overlay: Optional[dict] = None, features_only: bool = False, out_indices=None,
                 output_fmt: Optional[str] = None, feature_cls: Optional[str] = None,
                 feature_cfg: Optional[dict] = None, **kwargs):
    """Build model `name` (optionally `name.tag`), load weights, optionally as a feature backbone.

    Args:
        name: a registered name (`fastwin.list_models()`), optionally with a pretrained tag, whose
            config (timm's for that tag) sets num_classes, input size, mean/std, crop ...
        checkpoint: path or state dict loaded strictly with `load_checkpoint` (with `features_only`,
            a classifier that does not fit is ignored).
        pretrained: load `pretrained_cfg_overlay["file"]` (or `pretrained_cfg["file"]`); as timm, a
            classifier that does not fit the file (other `num_classes`) is re-initialized.
        pretrained_cfg: entries replacing those of the tag's config (a dict).
        pretrained_cfg_overlay: entries to override in it (e.g. `file`, `mean`, `std`).
        features_only: return a backbone giving the maps of `out_indices`.
        out_indices: features to return (None: the model's default; an int n: the last n).
        output_fmt: "NCHW" or "NHWC" for `features_only` (default: the model's native layout).
        feature_cls: timm's name of the backbone class (also accepted in `feature_cfg`): "getter",
            "list", "hook" (any name containing it) -> a list of maps; "dict" -> a dict keyed by
            module name; "fx" -> a torch.fx GraphModule (`fastwin.models.features.FEATURE_CLASSES`).
        feature_cfg: extra backbone options, e.g. `dict(norm=True)`.
        **kwargs: override the entry point's defaults (num_classes, img_size, drop_path_rate ...).
    Raises:
        ValueError: unknown name or tag; `pretrained=True` without a weights file; both `checkpoint`
            and `pretrained`; a `feature_cls` fastwin cannot honour.
    """
    arch, tag = split_model_name_tag(name)
    if arch not in _MODELS:
        close = difflib.get_close_matches(arch, _MODELS, n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (see fastwin.list_models())")
    if pretrained and checkpoint is not None:
        raise ValueError("give either checkpoint=... or pretrained=True (with pretrained_cfg_overlay=dict(file=...)), "
                         "not both")
    feature_cfg = dict(feature_cfg or {})
    feature_cls = feature_cfg.pop("feature_cls", feature_cls)
    if features_only:
        from .features import feature_class

        feature_class(feature_cls)  # refuse a class fastwin cannot honour before building anything
    tag, cfg_entries = tag_cfg(arch, tag)
    cfg_entries.update(pretrained_cfg or {})
    cfg_entries.update(pretrained_cfg_overlay or {})
    _defaults_from_cfg(cfg_entries, kwargs)
    model = _MODELS[arch](**kwargs)
    cfg = with_tag(getattr(model, "pretrained_cfg", None) or {}, tag, cfg_entries)
    with_pretrained_cfg(model, arch, cfg)
    if pretrained:
        file = cfg.get("file")
        if not file:
            raise ValueError(
                f"fastwin bundles and downloads no pretrained weights for {name!r}; pass a local file with "
                f"pretrained_cfg_overlay=dict(file='/path/to/weights.pth') (timm's convention; official, timm and "
                f"fastwin layouts load), or use checkpoint=...")
        load_pretrained(model, file)
    elif checkpoint is not None and features_only:
        load_pretrained(model, checkpoint)  # the classifier is pruned anyway: it need not fit
    elif checkpoint is not None:
        from .checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint)
    if features_only:
        from .features import feature_backbone

        model = feature_backbone(model, feature_cls, out_indices, output_fmt, **feature_cfg)
    return model
