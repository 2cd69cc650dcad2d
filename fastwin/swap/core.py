"""The swap driver: rules, report and the in-place replacement walk.

Families (`fastwin.swap.swin`, `.uniformer`, `.vit`) register rules with
`register_swap(name, matches, convert, contract=None, twin=None)`:
    matches(module) -> bool          recognise a foreign module by its structure
    convert(module) -> nn.Module     a fastwin module computing the same function with the same weights
                                     (built around the module's own submodules where it can)
    contract(module, probe) -> Contract
                                     the forward contract the replacement has: calls both must take
                                     with equal outputs (`accepts`), and calls the replacement refuses,
                                     which the module must refuse too (`refuses`: a module that also
                                     takes them is called that way somewhere, and would break)
    twin(module) -> nn.Module        a CPU module with values to probe in place of a meta one
                                     (default `random_twin`)
A module is replaced only after its contract is verified on random inputs (`verify`); a module whose
structure matches but whose forward does not is left as it is, and `SwapReport.left` says why.
Rules are tried in registration order on each module, outermost first; a replaced module's children
are not visited again (a swapped block already contains fastwin attention). Rules registered with
`register_planned_swap` verify inside their own `plan` (whole Swin blocks).
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import weakref
from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..ops import relative_position_index
from ..utils import pair


@dataclasses.dataclass
class Contract:
    """Probe calls (argument tuples) that verify a replacement against the module it replaces."""

    accepts: Sequence[tuple]
    refuses: Sequence[tuple] = ()


@dataclasses.dataclass
class SwapRule:
    name: str
    matches: Callable[[nn.Module], bool]
    convert: Callable[[nn.Module], nn.Module]
    contract: Optional[Callable[[nn.Module, "Probe"], Contract]] = None
    twin: Optional[Callable[[nn.Module], nn.Module]] = None
    note: str = ""  # what the report says once about every module this rule replaced (call-time limits)
    # Why a module the rule recognised was left as it was (None: not recognised), asked after `matches` said no.
    skip_reason: Optional[Callable[[nn.Module], Optional[str]]] = None


_RULES: List[SwapRule] = []


def register_swap(name: str, matches: Callable, convert: Callable, contract: Optional[Callable] = None,
                  twin: Optional[Callable] = None, note: str = "", skip_reason: Optional[Callable] = None) -> None:
    """Add a rule (see the module docstring). Without `contract` the rule must verify in `matches`
    itself (as `register_planned_swap` rules do). `note`: what the report says once about the modules
    it replaced; `skip_reason(m)`: why a module it recognised but did not match was left (or None)."""
    _RULES.append(SwapRule(name, matches, convert, contract, twin, note, skip_reason))


class Probe:
    """Runs a module and a candidate replacement on the same random inputs, in eval mode, without grad."""

    def __init__(self, module: nn.Module):
        self.module = module
        ref = next(itertools.chain(module.parameters(), module.buffers()), None)
        self.device = ref.device if ref is not None else torch.device("cpu")
        self.dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        self.tol = 1e-4 if self.dtype in (torch.float32, torch.float64) else 2e-2
        self.gen = torch.Generator().manual_seed(0)

    def randn(self, *shape):
        return torch.randn(*shape, generator=self.gen).to(self.device, self.dtype)

    def close(self, a, b) -> bool:
        """Equal up to `tol` (max error relative to max |b|); tuples / lists element by element (None
        only matches None), e.g. Hugging Face attention's `(output, weights)`."""
        if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
            return len(a) == len(b) and all((x is None and y is None) or self.close(x, y) for x, y in zip(a, b))
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
            return False
        scale = b.detach().double().abs().max().clamp_min(1e-6)
        return bool(((a.double() - b.double()).abs().max() / scale) <= self.tol)

    def run(self, fn, *others: nn.Module):
        """`fn()` with the module and `others` (the candidate) in eval mode, modes restored after; None
        when it raises (the module refused this input)."""
        modules = [mod for root in (self.module, *others) for mod in root.modules()]
        modes = [(mod, mod.training) for mod in modules]  # pre-order: a parent is restored before its children
        for root in (self.module, *others):
            root.eval()
        try:
            with torch.no_grad():
                return fn()
        except Exception:  # the module refused this input: not a match for this probe
            return None
        finally:
            for mod, mode in modes:
                mod.train(mode)


def on_meta(m: nn.Module) -> bool:
    return any(t.is_meta for t in itertools.chain(m.parameters(), m.buffers()))


def random_twin(m: nn.Module) -> nn.Module:
    """A CPU copy of module `m` (meta or not) to probe: same class and structure, random weights.

    Weights get fan-in-scaled normals and 1-D `weight`s values around 1 (so activations stay O(1)).
    Buffers keep their values, except on meta, where they have none: there integer buffers are zeroed,
    except `relative_position_index` buffers, which get what the official constructors compute for
    their module's `window_size` (float buffers get random values: rules fix theirs in their twin).
    Anything else random can only make a probe fail, never pass wrongly.
    """
    meta = on_meta(m)
    twin = copy.deepcopy(m)
    twin = twin.to_empty(device="cpu") if meta else twin.cpu()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # buffers keep their values where they have them (a foreign mask or coordinate table as it is)
        randomize_parameters_(twin, gen)
        for name, t in twin.named_buffers() if meta else ():
            if not t.is_floating_point():
                t.zero_()
            elif t.dim() >= 2:
                t.copy_(torch.randn(t.shape, generator=gen) * t.shape[-1] ** -0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
        for mod in twin.modules() if meta else ():
            window = pair_or_none(getattr(mod, "window_size", None))
            index = getattr(mod, "relative_position_index", None)
            if window is not None and isinstance(index, torch.Tensor):
                want = relative_position_index(window)
                if index.shape == want.shape:
                    index.copy_(want)
    return twin


def _describe(args) -> str:
    return ", ".join(f"[{', '.join(map(str, a.shape))}]" if isinstance(a, torch.Tensor) else repr(a) for a in args)


def verify(rule: SwapRule, module: nn.Module) -> Optional[str]:
    """None when `new` (the rule's replacement of `module`) keeps `module`'s forward contract, else why not.

    The probe runs on the rule's twin of `module` (`random_twin` by default: a CPU copy with random
    weights) and the twin's replacement, never on `module` itself: its own weights may hide a
    difference (a zero-initialized projection makes any attention agree), and a meta module has none.
    """
    if rule.contract is None:
        return None
    try:
        module = (rule.twin or random_twin)(module)
        new = _convert_like(rule, module)
    except Exception as exc:  # a module that cannot be copied or converted cannot be verified
        return f"it could not be copied to probe ({type(exc).__name__}: {exc})"[:200]
    probe = Probe(module)
    contract = rule.contract(module, probe)
    for args in contract.accepts:
        want = probe.run(lambda: module(*args))
        if want is None:
            return f"its forward refuses a {_describe(args)} input, which the replacement takes"
        got = probe.run(lambda: new(*args), new)
        if got is None:
            return f"the replacement refuses a {_describe(args)} input, which its forward takes"
        if not probe.close(got, want):
            return f"the replacement computes another function on a {_describe(args)} input"
    for args in contract.refuses:
        if probe.run(lambda: module(*args)) is not None:
            return f"its forward also takes a {_describe(args)} input, which the replacement refuses"
    return None


_SWIN_BLOCK_CHILDREN = {"norm1", "attn", "norm2", "mlp", "drop_path", "drop_path1", "drop_path2"}


def pair_or_none(v, allow_zero: bool = False) -> Optional[Tuple[int, int]]:
    """`pair(v)` of an int / list / tuple / torch.Size, or None if it is not a valid size."""
    try:
        return pair("size", tuple(v) if isinstance(v, (list, tuple, torch.Size)) else v, allow_zero=allow_zero)
    except (ValueError, TypeError):
        return None


def swin_block_parts(m, fused_cls: type, is_attention: Callable):
    """(attn, norm1, norm2, mlp, window, shift) of a foreign timm/official-style Swin block, or None.

    None for fastwin's own `fused_cls`, for blocks whose `attn` fails `is_attention`, and for blocks
    with extra children or own parameters (layer scale, post-norm variants ...): they compute
    something else.
    """
    if isinstance(m, fused_cls) or not isinstance(m, nn.Module):
        return None
    attn = getattr(m, "attn", None)
    if not is_attention(attn):
        return None
    norm1, norm2, mlp = (getattr(m, n, None) for n in ("norm1", "norm2", "mlp"))
    if not all(isinstance(p, nn.Module) for p in (norm1, norm2, mlp)):
        return None
    if set(dict(m.named_children())) - _SWIN_BLOCK_CHILDREN or any(True for _ in m.named_parameters(recurse=False)):
        return None
    window = pair_or_none(getattr(m, "window_size", None))
    shift = pair_or_none(getattr(m, "shift_size", None), allow_zero=True)
    if window is None or shift is None or window != pair_or_none(attn.window_size):
        return None
    return attn, norm1, norm2, mlp, window, shift


def randomize_parameters_(module: nn.Module, gen: torch.Generator) -> None:
    """Random values for a probe twin's parameters, in place (under no_grad): fan-in-scaled normals
    for matrices, 1-D weights around 1 (norms keep activations O(1)), other vectors small, Swin V2
    `logit_scale` around log 10 (the initial multiplier), so every part of a block shows in its output."""
    for name, p in module.named_parameters():
        if name.endswith("logit_scale"):
            p.copy_(math.log(10.0) + torch.randn(p.shape, generator=gen) * 0.5)
        elif p.dim() >= 2:
            p.copy_(torch.randn(p.shape, generator=gen) * p.shape[-1] ** -0.5)
        elif name.endswith("weight"):
            p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
        else:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def register_planned_swap(name: str, parts: Callable, plan: Callable, note: str = "") -> None:
    """A rule whose match needs the full replacement built (a probe runs it): `plan(m)` returns the
    replacement, or None, or a string saying why the recognised module is left as it is (the report
    lists it). `matches` keeps the plan it built so `convert` does not probe again."""
    plans: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()
    reasons: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()

    def matches(m) -> bool:
        if parts(m) is None:
            return False
        built = plan(m)
        if isinstance(built, str):
            reasons[m] = built
            return False
        if built is not None:
            plans[m] = built
        return built is not None

    def convert(m):
        built = plans.pop(m, None) or plan(m)
        if built is None or isinstance(built, str):
            raise RuntimeError(f"{name}: {type(m).__name__} no longer matches (changed since it was probed?)")
        return built

    register_swap(name, matches, convert, note=note, skip_reason=lambda m: reasons.pop(m, None))


@dataclasses.dataclass
class SwapReport:
    """What `swap` replaced: (module path, rule name) pairs; what it left: (path, rule, why) for modules
    a rule recognised but left as they were (the probe did not confirm their forward contract, or the
    rule says why); and per rule used, what its replacements do not cover (`notes`)."""

    replaced: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    left: List[Tuple[str, str, str]] = dataclasses.field(default_factory=list)
    notes: Dict[str, str] = dataclasses.field(default_factory=dict)

    def counts(self):
        return Counter(rule for _, rule in self.replaced)

    def __len__(self):
        return len(self.replaced)

    def __str__(self):
        if not self.replaced:
            text = "fastwin.swap: nothing replaced (no supported modules found)"
        else:
            text = "fastwin.swap replaced " + ", ".join(f"{n} x {r}" for r, n in sorted(self.counts().items()))
            root = [rule for path, rule in self.replaced if path == ""]
            if root:
                text += f" (the module passed in was a {root[0]}: use the returned module)"
        for rule, note in sorted(self.notes.items()):
            text += f"\n  {rule}: {note}"
        if self.left:
            path, rule, why = self.left[0]
            more = f" and {len(self.left) - 1} more (report.left)" if len(self.left) > 1 else ""
            text += f"\n  left {len(self.left)} unverified as they were: {path or '<root>'} ({rule}): {why}{more}"
        return text


def _convert_like(rule: SwapRule, module: nn.Module) -> nn.Module:
    """`rule.convert(module)`, its new tensors on the module's device and dtype, its new submodules in
    the module's train/eval mode. What it shares with `module` is left exactly as it was: a norm kept
    in fp32 in a bf16 model stays fp32, a frozen eval-mode norm in a training model stays in eval."""
    modes = {m: m.training for m in module.modules()}
    shared = {id(t) for t in itertools.chain(module.parameters(), module.buffers())}
    new = rule.convert(module)
    ref = next(module.parameters(), None)
    for sub in new.modules():
        sub.training = modes.get(sub, module.training)
        if ref is None:
            continue
        for name, t in itertools.chain(sub.named_parameters(recurse=False), sub.named_buffers(recurse=False)):
            dtype = ref.dtype if t.is_floating_point() else t.dtype
            if id(t) in shared or (t.device == ref.device and t.dtype == dtype):
                continue
            moved = t.detach().to(device=ref.device, dtype=dtype)
            if isinstance(t, nn.Parameter):
                moved = nn.Parameter(moved, requires_grad=t.requires_grad)
            setattr(sub, name, moved)
    return new


def _replacement(module: nn.Module, path: str, report: SwapReport):
    """(rule, verified replacement) of the first rule that matches `module` and keeps its contract, or
    (None, None); each matching rule whose probe fails is recorded in `report.left`."""
    for rule in _RULES:
        if not rule.matches(module):
            continue
        why = verify(rule, module)
        if why is None:
            return rule, _convert_like(rule, module)
        report.left.append((path, rule.name, why))
    return None, None


def _record(report: SwapReport, path: str, rule: SwapRule) -> None:
    report.replaced.append((path, rule.name))
    if rule.note:
        report.notes[rule.name] = rule.note


def _record_skip(report: SwapReport, path: str, module: nn.Module) -> None:
    """After no rule matched `module`: note why, if a rule recognised it."""
    for rule in _RULES:
        why = rule.skip_reason(module) if rule.skip_reason is not None else None
        if why:
            report.left.append((path, rule.name, why))
            return


def _swap_children(parent: nn.Module, prefix: str, report: SwapReport) -> None:
    for name, child in list(parent.named_children()):
        path = f"{prefix}{name}"
        rule, new = _replacement(child, path, report)
        if rule is not None:
            setattr(parent, name, new)
            _record(report, path, rule)
        else:
            _record_skip(report, path, child)
            _swap_children(child, path + ".", report)


def _swap_root(module: nn.Module, rule: SwapRule, new: nn.Module, report: SwapReport) -> nn.Module:
    """A supported module passed on its own: replace what is inside it in place, return its replacement.

    The replacement `new` is built first (rules match on the untouched module); then each supported
    child is replaced in place by the replacement's module of the same name where there is one (the
    very same object, so both share everything) or by its own conversion, and unsupported children
    are walked as usual.
    """
    for name, child in list(module.named_children()):
        child_rule, child_new = _replacement(child, name, report)
        if child_rule is None:
            _record_skip(report, name, child)
            _swap_children(child, f"{name}.", report)
            continue
        shared = getattr(new, name, None)
        use = shared if isinstance(shared, nn.Module) and shared is not child else child_new
        setattr(module, name, use)
        _record(report, name, child_rule)
    if not report.replaced:
        raise ValueError(
            f"swap() replaces modules in place, and nothing inside this bare {type(module).__name__} can be "
            f"replaced; pass its parent (e.g. `fastwin.swap(nn.Sequential(module))`)"
        )
    _record(report, "", rule)
    return new


def swap(model: nn.Module) -> Tuple[nn.Module, SwapReport]:
    """Replace supported attention/block modules of `model` with fastwin's, in place.

    Weights are kept (the same parameter objects, so an optimizer built before still holds them), so
    outputs are unchanged up to floating-point rounding. A module is replaced only after a probe on
    random inputs shows that the replacement keeps its forward contract (same outputs on the inputs
    the replacement takes; the module refuses those it refuses); others are left as they are and
    listed in `report.left` with the reason (NesT / VOLO / SAM-ViT / FastViT attention, which take
    4-D maps, for example). A foreign Swin block becomes the fused
    `SwinTransformerBlock` only where a probe shows that it computes the same function (in eval mode,
    every module's train/eval mode restored after); otherwise only its attention is replaced.

    Hugging Face transformers Swin layers become instances of a fastwin subclass of their own class
    (same submodules and parameters; `fastwin.swap.hf_swin`), after a probe; one that fails it is left
    as it was and listed in `report.left`, and what they hand back to transformers' code at call
    time is in `report.notes`.

    A bare block (a supported module with no parent, e.g. one official `SwinTransformerBlock`) cannot
    be replaced in its parent, so its own supported children (its attention) are replaced in place,
    and the returned module is the whole fastwin replacement (e.g. the fused block), built around the
    same submodules and parameters: use the returned module, as with
    `nn.SyncBatchNorm.convert_sync_batchnorm`. The report lists the children (`"attn"`) and the
    module itself (path `""`). ValueError if nothing inside a bare module can be replaced (a bare
    `WindowAttention`): pass its parent.

    Meta device: a model built under `torch.device("meta")` is swapped without data (meta in, meta
    out). Attention modules are matched by structure (a meta `relative_position_index` has no values
    to compare, only its shape); blocks are probed on a CPU twin with random weights and the derived
    buffers (`relative_position_index`, `attn_mask`) set to what the official constructors compute.
    fastwin recomputes those buffers itself, so after `to_empty()` and loading weights the swapped
    model computes what the original would with its standard buffers.

    Returns:
        (module, report) — `model` itself (or, for a bare block, its replacement; see above), and what
        was replaced (`print(report)`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"swap() expects an nn.Module, got {type(model).__name__}")
    report = SwapReport()
    rule, new = _replacement(model, "", report)
    if rule is not None:
        return _swap_root(model, rule, new, report), report
    _swap_children(model, "", report)
    return model, report
