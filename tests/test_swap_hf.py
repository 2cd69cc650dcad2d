"""`fastwin.swap` on Hugging Face transformers Swin v1 / V2 models built from small random configs.

Every swapped model is compared with an untouched deep copy of itself: eval outputs (relative error
< 1e-5) and training gradients (< 1e-4, drop path active, same seed) on every CPU backend (Triton under
its interpreter on tiny shapes), and on the GPU when there is one. transformers is an optional test
dependency: without it this module skips.
"""
import copy
import importlib
import io
import re

import pytest
import torch

import fastwin
from fastwin.dispatch import unavailable_reason
from tests.conftest import requires_cuda
from tests.helpers import rel_err

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: thread hand-offs would cost more than the work

FAMILIES = {
    "v1": (transformers.SwinConfig, transformers.SwinForImageClassification),
    "v2": (transformers.Swinv2Config, transformers.Swinv2ForImageClassification),
}
RULES = {"v1": "hf_swin_layer", "v2": "hf_swinv2_layer"}
CPU_BACKENDS = ("reference", "cpp", "auto")

# (window, pixel input [H, W]) on patch 2: each stage holds a W-MSA and an SW-MSA layer.
CASES = [
    (3, (11, 13)),  # grid 6x7 then 3x4: padding in W, stage 2 as large as the window (shift 0)
    (4, (16, 16)),  # grid 8x8 divisible by the window; 4x4 at stage 2 (window = map, shift 0)
    (5, (27, 37)),  # grid 14x19 then 7x10: padding in both dims at both stages
]


def build(family: str, window: int, embed_dim=16, depths=(2, 2), heads=(2, 4), drop_path=0.2, seed=0, **extra):
    """A random-weight transformers model (no download) and an untouched copy of it."""
    config_cls, model_cls = FAMILIES[family]
    config = config_cls(image_size=32, patch_size=2, embed_dim=embed_dim, depths=list(depths), num_heads=list(heads),
                        window_size=window, num_labels=5, drop_path_rate=drop_path, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, **extra)
    torch.manual_seed(seed)
    model = model_cls(config)
    with torch.no_grad():  # off the zero / unit initialisation, so position bias and norms matter
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if name.endswith("logit_scale") else 0.1))
    return model, copy.deepcopy(model)


def use_backend(name: str):
    reason = None if name == "auto" else unavailable_reason(name)
    if reason is not None:
        pytest.skip(f"backend {name} unavailable: {reason}")
    return fastwin.set_backend(name, strict=name != "auto")


def expected_backend(name: str, device: str) -> str:
    return {"cpu": "cpp", "cuda": "triton"}[device] if name == "auto" else name


def swap_checked(model, family: str):
    _, report = fastwin.swap(model)
    layers = sum(1 for n, _ in model.named_modules() if re.fullmatch(r".*\.blocks\.\d+", n))
    assert report.counts() == {RULES[family]: layers} and not report.left, str(report)
    return report


def check_eval(family, window, size, backends, device="cpu", batch=2, **kw):
    model, ref = build(family, window, **kw)
    model, ref = model.to(device).eval(), ref.to(device).eval()
    swap_checked(model, family)
    x = torch.randn(batch, 3, *size, device=device)
    with torch.no_grad():
        want = ref(x).logits
    for backend in backends:
        with use_backend(backend), fastwin.dispatch.record() as calls, torch.no_grad():
            got = model(x).logits
        assert calls and all(c == ("shifted_window_attention", expected_backend(backend, device)) for c in calls), calls
        assert rel_err(got, want) < 1e-5, backend


def check_training(family, window, size, backends, device="cpu", batch=2, **kw):
    model, ref = build(family, window, **kw)
    model, ref = model.to(device).train(), ref.to(device).train()
    swap_checked(model, family)
    x = torch.randn(batch, 3, *size, device=device)
    torch.manual_seed(1)  # the same drop-path draws: both call the same modules in the same order
    want = ref(x).logits
    want.square().mean().backward()
    grads = dict(ref.named_parameters())
    top = max(p.grad.abs().max().item() for p in grads.values())
    for backend in backends:
        model.zero_grad()
        with use_backend(backend), fastwin.dispatch.record() as calls:
            torch.manual_seed(1)
            got = model(x).logits
            got.square().mean().backward()
        assert calls, "the fused path did not run"
        assert rel_err(got, want) < 1e-5, backend
        for name, p in model.named_parameters():
            g = grads[name].grad
            # Per tensor, relative to its largest gradient; tensors whose gradient is zero in exact
            # arithmetic (the k bias: softmax ignores it) compare rounding noise, so floor the scale.
            scale = max(g.abs().max().item(), 1e-3 * top)
            assert (p.grad - g).abs().max().item() / scale < 1e-4, (backend, name)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("window,size", CASES)
def test_swap_keeps_eval_outputs(family, window, size):
    check_eval(family, window, size, CPU_BACKENDS)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("window,size", CASES[::2])
def test_swap_keeps_training_gradients(family, window, size):
    check_training(family, window, size, CPU_BACKENDS)


TINY = dict(embed_dim=8, depths=(2,), heads=(1,), batch=1)  # the Triton interpreter: one stage, one head, 4x6 grid


@pytest.mark.parametrize("family", FAMILIES)
def test_swap_keeps_eval_outputs_and_gradients_triton(family):
    check_eval(family, 3, (7, 11), ["triton"], **TINY)
    check_training(family, 3, (7, 11), ["triton"], **TINY)


@requires_cuda
@pytest.mark.parametrize("family", FAMILIES)
def test_swap_on_gpu(family):
    gpu = [b for b in ("auto", "triton", "cuda") if b == "auto" or unavailable_reason(b) is None]
    for window, size in CASES:
        check_eval(family, window, size, gpu, device="cuda")
    check_training(family, 5, (27, 37), gpu, device="cuda")


# ------------------------------------------------------------------------------- what stays the same

@pytest.mark.parametrize("family", FAMILIES)
def test_swap_keeps_parameters_state_dict_and_classes(family):
    model, ref = build(family, 4)
    params = {n: p for n, p in model.named_parameters()}
    state = model.state_dict()
    swap_checked(model, family)
    assert {n: p for n, p in model.named_parameters()} == params  # the same objects: an optimizer keeps working
    after = model.state_dict()
    assert list(after) == list(state) and all(torch.equal(after[k], state[k]) for k in state)
    ref.load_state_dict(after, strict=True)  # loadable as transformers expects
    layer = model.base_model.encoder.layers[0].blocks[1]
    base = type(ref.base_model.encoder.layers[0].blocks[1])
    assert isinstance(layer, base) and type(layer) is not base
    assert fastwin.swap(model)[1].replaced == []  # a second swap finds nothing left to do


@pytest.mark.parametrize("family", FAMILIES)
def test_swapped_model_pickles_and_deep_copies(family):
    model, ref = build(family, 4)
    model.eval(), ref.eval()
    swap_checked(model, family)
    buffer = io.BytesIO()
    torch.save(model, buffer)  # the whole module, generated layer classes included
    buffer.seek(0)
    x = torch.randn(1, 3, 19, 21)
    for twin in (torch.load(buffer, weights_only=False), copy.deepcopy(model)):
        layer = twin.base_model.encoder.layers[0].blocks[1]
        assert type(layer) is type(model.base_model.encoder.layers[0].blocks[1])
        assert layer.attention is not model.base_model.encoder.layers[0].blocks[1].attention
        with torch.no_grad(), fastwin.dispatch.record() as calls:
            assert rel_err(twin(x).logits, ref(x).logits) < 1e-5
        assert len(calls) == 4


@pytest.mark.parametrize("family", FAMILIES)
def test_output_attentions_runs_transformers_code(family):
    extra = {"attn_implementation": "eager"} if family == "v1" else {}
    model, ref = build(family, 4, **extra)
    model.eval(), ref.eval()
    swap_checked(model, family)
    x = torch.randn(1, 3, 19, 21)
    with fastwin.dispatch.record() as calls, torch.no_grad():
        got = model(x, output_attentions=True)
    want = ref(x, output_attentions=True)
    assert calls == [] and len(got.attentions) == len(want.attentions) > 0
    for a, b in zip(got.attentions, want.attentions):
        torch.testing.assert_close(a, b)
    with fastwin.dispatch.record() as calls, torch.no_grad():  # and back on the fused path without it
        assert rel_err(model(x).logits, ref(x).logits) < 1e-5
    assert calls


def test_call_time_fallback_reasons():
    model, _ = build("v1", 4)
    swap_checked(model, "v1")
    layer = model.swin.encoder.layers[0].blocks[1]
    x = torch.randn(1, 64, 16)
    assert layer.fastwin_fallback_reason(x, (8, 8)) is None
    assert "head_mask" in layer.fastwin_fallback_reason(x, (8, 8), head_mask=torch.ones(2))
    assert "output_attentions" in layer.fastwin_fallback_reason(x, (8, 8), output_attentions=True)
    assert layer.fastwin_fallback_reason(x, (8, 8), something_new=1) is not None
    assert "[B, H * W, C]" in layer.fastwin_fallback_reason(x, (8, 9))
    if hasattr(layer.attention, "config"):  # transformers 5: attention implementations are pluggable
        model.config._attn_implementation = "flex_attention"
        assert "flex_attention" in layer.fastwin_fallback_reason(x, (8, 8))


def test_small_inputs_follow_transformers_window_rule():
    """transformers shrinks a v1 layer's window to the map (and keeps it so) when the map is not
    larger; below the bias table's window its own code runs, and fails, as the original does."""
    model, ref = build("v1", 4)
    model.eval(), ref.eval()
    swap_checked(model, "v1")
    x = torch.randn(1, 3, 16, 16)  # stage 2 map 4x4 = window: shift becomes 0
    with torch.no_grad():
        assert rel_err(model(x).logits, ref(x).logits) < 1e-5
    small = torch.randn(1, 3, 12, 12)  # stage 2 map 3x3: a 3x3 window the 4x4 table does not fit
    for m in (ref, model):
        with pytest.raises(RuntimeError):
            m(small)
    swapped, original = model.swin.encoder.layers[1].blocks[0], ref.swin.encoder.layers[1].blocks[0]
    assert (swapped.window_size, swapped.shift_size) == (original.window_size, original.shift_size) == (3, 0)


def test_v2_large_logit_multiplier_runs_transformers_code():
    """transformers adds V2's shift mask twice; where that could show, the layer runs its own code."""
    model, ref = build("v2", 4)
    model.eval(), ref.eval()
    swap_checked(model, "v2")
    for m in (model, ref):
        with torch.no_grad():
            m.swinv2.encoder.layers[0].blocks[1].attention.self.logit_scale.fill_(4.6)  # x ~100
    x = torch.randn(1, 3, 19, 21)
    with fastwin.dispatch.record() as calls, torch.no_grad():
        got = model(x).logits
    assert len(calls) == 3  # 4 layers, the shifted stage-1 layer on transformers' code
    assert rel_err(got, ref(x).logits) < 1e-5


def test_gradient_checkpointing_still_works():
    model, ref = build("v1", 3)
    swap_checked(model, "v1")
    for m in (model, ref):
        (getattr(m, "activation_checkpointing_enable", None) or m.gradient_checkpointing_enable)()
        m.train()
    x = torch.randn(1, 3, 11, 13)
    torch.manual_seed(2)
    model(x).logits.sum().backward()
    torch.manual_seed(2)
    ref(x).logits.sum().backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert (p.grad - q.grad).abs().max() <= 1e-4 * q.grad.abs().max().clamp_min(1e-3), name


@pytest.mark.parametrize("module,make", [("donut.modeling_donut_swin", "DonutSwin"),
                                         ("maskformer.modeling_maskformer_swin", "MaskFormerSwin")])
def test_swap_donut_and_maskformer_swin(module, make):
    models = importlib.import_module(f"transformers.models.{module}")
    configs = importlib.import_module(f"transformers.models.{module.split('.')[0]}.configuration_"
                                      f"{module.split('.')[1][len('modeling_'):]}")
    config = getattr(configs, f"{make}Config")(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2],
                                               num_heads=[2, 4], window_size=4)
    torch.manual_seed(0)
    model = getattr(models, f"{make}Model")(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ref = copy.deepcopy(model)
    _, report = fastwin.swap(model)
    assert report.counts() == {"hf_swin_layer": 4}, str(report)
    x = torch.randn(2, 3, 27, 37)
    with torch.no_grad():
        assert rel_err(model(x).last_hidden_state, ref(x).last_hidden_state) < 1e-5


def test_report_lists_layers_left_unswapped():
    """A layer that looks like a transformers Swin layer but computes something else stays as it was."""
    model, ref = build("v1", 4)
    layer = model.swin.encoder.layers[0].blocks[0]

    class Doubled(type(layer)):
        def forward(self, hidden_states, input_dimensions, always_partition=False, **kwargs):
            out = super().forward(hidden_states, input_dimensions, always_partition, **kwargs)
            return (2 * out[0],) + tuple(out[1:])

    layer.__class__ = Doubled
    _, report = fastwin.swap(model)
    assert report.counts() == {"hf_swin_layer": 3}
    assert report.left == [("swin.encoder.layers.0.blocks.0", "hf_swin_layer",
                            "the fused path did not reproduce it on a random input")]
    assert "left 1 unverified as they were: swin.encoder.layers.0.blocks.0" in str(report)
    assert "output_attentions=True" in str(report)  # the call-time note


def test_meta_device_layers_are_left_and_reported():
    config_cls, model_cls = FAMILIES["v2"]
    try:
        with torch.device("meta"):
            model = model_cls(config_cls(image_size=32, patch_size=2, embed_dim=16, depths=[2], num_heads=[2],
                                         window_size=4, num_labels=5))
    except RuntimeError as exc:  # transformers 4 reads values while building (drop-path rates)
        pytest.skip(f"this transformers version cannot build on the meta device: {exc}")
    _, report = fastwin.swap(model)
    assert report.replaced == [] and len(report.left) == 2
    assert all("meta device" in why for _, _, why in report.left)


@pytest.mark.parametrize("family", FAMILIES)
def test_swap_backbones_at_maps_smaller_than_the_window(family):
    """transformers' backbones always partition: a 3x3 map runs in one padded 4x4 window, shifted."""
    config_cls, backbone_cls = {"v1": (transformers.SwinConfig, transformers.SwinBackbone),
                                "v2": (transformers.Swinv2Config, transformers.Swinv2Backbone)}[family]
    config = config_cls(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2, 2], num_heads=[2, 2, 4],
                        window_size=4, out_features=["stage1", "stage2", "stage3"])
    torch.manual_seed(0)
    model = backbone_cls(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ref = copy.deepcopy(model)
    _, report = fastwin.swap(model)
    assert report.counts() == {RULES[family]: 6}, str(report)
    x = torch.randn(2, 3, 13, 11)  # maps 7x6, 4x3, 2x2
    with torch.no_grad(), fastwin.dispatch.record() as calls:
        got = model(x).feature_maps
    want = ref(x).feature_maps
    assert len(calls) == 6 and len(got) == len(want) == 3
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-5
