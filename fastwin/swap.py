"""`fastwin.swap(model)`: put fastwin modules into a timm / official / third-party model, in place.

Families register rules with `register_swap(name, matches, convert)`:
    matches(module) -> bool          recognise a foreign module by its structure
    convert(module) -> nn.Module     a fastwin module computing the same function with the same weights
Rules are tried in registration order on each module, outermost first; a replaced module's children
are not visited again (a swapped block already contains fastwin attention).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Callable, List, Tuple

import torch.nn as nn


@dataclasses.dataclass
class SwapRule:
    name: str
    matches: Callable[[nn.Module], bool]
    convert: Callable[[nn.Module], nn.Module]


_RULES: List[SwapRule] = []


def register_swap(name: str, matches: Callable, convert: Callable) -> None:
    _RULES.append(SwapRule(name, matches, convert))


@dataclasses.dataclass
class SwapReport:
    """What `swap` replaced: (module path, rule name) pairs."""

    replaced: List[Tuple[str, str]] = dataclasses.field(default_factory=list)

    def counts(self):
        return Counter(rule for _, rule in self.replaced)

    def __len__(self):
        return len(self.replaced)

    def __str__(self):
        if not self.replaced:
            return "fastwin.swap: nothing replaced (no supported modules found)"
        return "fastwin.swap replaced " + ", ".join(f"{n} x {r}" for r, n in sorted(self.counts().items()))


def _convert_like(rule: SwapRule, module: nn.Module) -> nn.Module:
    new = rule.convert(module)
    ref = next(module.parameters(), None)
    if ref is not None:
        new = new.to(device=ref.device, dtype=ref.dtype)
    return new.train(module.training)


def _swap_children(parent: nn.Module, prefix: str, report: SwapReport) -> None:
    for name, child in list(parent.named_children()):
        path = f"{prefix}{name}"
        rule = next((r for r in _RULES if r.matches(child)), None)
        if rule is not None:
            setattr(parent, name, _convert_like(rule, child))
            report.replaced.append((path, rule.name))
        else:
            _swap_children(child, path + ".", report)


def swap(model: nn.Module) -> Tuple[nn.Module, SwapReport]:
    """Replace supported attention/block modules of `model` with fastwin's, in place.

    Weights are kept (same tensors' values), so outputs are unchanged up to floating-point rounding.

    Returns:
        (model, report) — the same model object, and what was replaced (`print(report)`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"swap() expects an nn.Module, got {type(model).__name__}")
    from . import models  # noqa: F401  (registers the families' rules)

    report = SwapReport()
    rule = next((r for r in _RULES if r.matches(model)), None)
    if rule is not None:
        raise ValueError(f"swap() replaces modules inside a model; pass the parent of this {type(model).__name__}")
    _swap_children(model, "", report)
    return model, report
