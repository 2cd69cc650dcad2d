"""What timm's generic model tests (timm's tests/test_models.py) check, on every model name fastwin
shares with timm, at small sizes: forward / backward, `pretrained_cfg` of every tag against timm's,
`head_hidden_size`, `reset_classifier(0)` / `reset_classifier(0, "")`, `features_only` with each
`feature_cls`, `feature_info`, `forward_intermediates`, and torch.fx `symbolic_trace` equality (eval
and train); then timm's and torchvision's fx feature extraction on a fastwin Swin and ViT, and a
swapped timm model under torch.fx.

The shared names are `pretrained_tags.TAGS`' keys (the generated table); `test_tag_table_is_timms`
checks that they are `fastwin.list_models() ∩ timm.list_models()` and that every value is timm's.
"""
import math

import pytest
import torch
import torch.fx
from fx_features import create_feature_extractor, install
from timm_compat import placeholders, require_timm
from timm_tags import KEPT, shared_names, tag_table

import fastwin
from fastwin import ops
from fastwin.models.features import FeatureGraph, FeatureMaps
from fastwin.models.pretrained_tags import TAGS

pytestmark = pytest.mark.usefixtures("one_thread")

SHARED = sorted(TAGS)
# One name per family runs in the default suite; the rest are marked slow (same code, other sizes).
REPRESENTATIVE = {"swin_tiny_patch4_window7_224", "swin_base_patch4_window12_384", "swinv2_tiny_window8_256",
                  "swinv2_base_window12to24_192to384", "vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224",
                  "vit_small_r26_s32_224", "vit_tiny_r_s16_p8_224"}
FUSED_OPS = {ops.attention, ops.shifted_window_attention, ops.window_attention, ops.linear_gelu}


def tiny(name):
    """Structure-keeping overrides (windows, stems, heads as registered) that timm's builders take too."""
    if name.startswith("swin"):
        return dict(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    return dict(depth=3, embed_dim=32, num_heads=1)


def fastwin_tiny(name):
    return dict(tiny(name), **(dict(layers=(1, 1, 1, 1), channels=(128,) * 4) if "r26" in name else {}))


def marked(names):
    return [n if n in REPRESENTATIVE else pytest.param(n, marks=pytest.mark.slow) for n in names]


def first(out):
    """DeiT distilled trains on two heads: their sum, else the output."""
    return out[0] + out[1] if isinstance(out, tuple) else out


def fx_fused_calls(gm: torch.fx.GraphModule) -> set:
    return {n.target for n in gm.graph.nodes if n.op == "call_function" and n.target in FUSED_OPS}


# ------------------------------------------------------------------------------ configs and tags

def test_tag_table_is_timms():
    timm = require_timm()
    assert SHARED == shared_names(timm)
    assert TAGS == tag_table(timm), "regenerate: python tests/timm_tags.py > fastwin/models/pretrained_tags.py"


@pytest.mark.parametrize("name,tag", [(n, t) for n in SHARED for t in TAGS[n]])
def test_pretrained_cfg_of_every_tag(name, tag):
    timm = require_timm()
    want = timm.models.get_pretrained_cfg(f"{name}.{tag}").to_dict()
    model = fastwin.create_model(f"{name}.{tag}", **fastwin_tiny(name))
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == name and cfg["tag"] == tag
    for key in KEPT + ("first_conv",):
        if key in want:
            assert cfg[key] == want[key], (key, cfg[key], want[key])
    # Swin v1 keeps the official layout: its classifier is `head` where timm's is `head.fc`
    assert cfg["classifier"] == (want["classifier"].replace("head.fc", "head") if name.startswith("swin_")
                                 else want["classifier"])
    assert model.num_classes == want["num_classes"]  # the tag sets the head, as timm's builder does
    heads = (cfg["classifier"],) if isinstance(cfg["classifier"], str) else cfg["classifier"]
    names = {k for k, _ in model.named_parameters()}
    if want["num_classes"]:
        assert all(f"{h}.weight" in names for h in heads)
    assert f"{cfg['first_conv']}.weight" in names
    assert fastwin.create_model(f"{name}.{tag}", num_classes=3, **fastwin_tiny(name)).num_classes == 3


def test_tags_select_timms_config_and_unknown_tags_are_refused():
    assert fastwin.create_model("swin_tiny_patch4_window7_224.ms_in22k", **tiny("swin")).head.out_features == 21841
    vit = fastwin.create_model("vit_tiny_patch16_224.augreg_in21k", **tiny("vit"))
    assert vit.head.out_features == 21843 and vit.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    default = fastwin.create_model("vit_base_patch16_224", **tiny("vit")).pretrained_cfg
    assert default["tag"] == next(iter(TAGS["vit_base_patch16_224"]))  # timm's default tag
    from fastwin.models.swin import swin_base_patch4_window12_384  # the entry point itself: the same config
    direct = swin_base_patch4_window12_384(**tiny("swin")).pretrained_cfg
    assert direct == fastwin.create_model("swin_base_patch4_window12_384", **tiny("swin")).pretrained_cfg
    assert direct["tag"] == "ms_in22k_ft_in1k" and direct["fixed_input_size"] is True
    with pytest.raises(ValueError, match="unknown pretrained tag 'in99k'.*augreg_in21k"):
        fastwin.create_model("vit_tiny_patch16_224.in99k")


# ------------------------------------------------------------------------------ model surface

@pytest.mark.parametrize("name", marked(SHARED))
def test_model_like_timm(name):
    """timm's test_model_default_cfgs / forward / backward / forward_intermediates on a tiny build,
    with timm's own tiny build as the reference for the surface numbers."""
    timm = require_timm()
    torch.manual_seed(0)
    model = fastwin.create_model(name, num_classes=5, **fastwin_tiny(name))
    cfg = model.pretrained_cfg
    x = torch.randn(2, *cfg["input_size"])
    if "r26" not in name:  # timm's hybrid takes no backbone overrides
        ref = timm.create_model(name, num_classes=5, **tiny(name))
        assert (model.num_features, model.head_hidden_size) == (ref.num_features, ref.head_hidden_size)
        assert [(f["num_chs"], f["reduction"]) for f in model.feature_info] == \
            [(f["num_chs"], f["reduction"]) for f in ref.feature_info]

    out = first(model.train()(x))  # forward / backward
    assert out.shape == (2, 5)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

    model.eval()
    hierarchical = cfg["pool_size"] is not None
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        if hierarchical:  # the unpooled map at the config's input size has the config's pool size
            assert tuple(feats.shape[1:3]) == tuple(cfg["pool_size"]) and feats.shape[-1] == model.num_features
        model.reset_classifier(0)
        assert model.num_classes == 0 and torch.equal(model(x), pre)
        model.reset_classifier(0, "")
        unpooled = model(x)
        assert unpooled.shape == (feats.shape if "distilled" not in name else pre.shape)  # DeiT: both tokens read

        # backbone: every feature_cls gives the same maps, shaped as feature_info says
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert len(inter) == len(model.feature_info)
        got = {}
        for cls in ("getter", "hook", "list", "dict", "fx"):
            torch.manual_seed(0)
            backbone = fastwin.create_model(name, features_only=True, feature_cls=cls, **fastwin_tiny(name)).eval()
            maps = backbone(x)
            got[cls] = list(maps.values()) if cls == "dict" else maps
        for cls, maps in got.items():
            assert len(maps) == len(backbone.feature_info.out_indices)
            assert all(torch.equal(a, b) for a, b in zip(maps, got["getter"])), cls
        axis = 1 if backbone.output_fmt == "NCHW" else 3
        for m, c, r in zip(got["getter"], backbone.feature_info.channels(), backbone.feature_info.reduction()):
            spatial = m.shape[2:] if axis == 1 else m.shape[1:3]
            assert m.shape[axis] == c and all(s <= math.ceil(i / r) + 1 for s, i in zip(spatial, x.shape[2:]))
        data = timm.data.resolve_data_config(model=backbone)
        assert data["input_size"] == cfg["input_size"] and data["mean"] == cfg["mean"]
        assert backbone.default_cfg is backbone.pretrained_cfg and "num_classes" not in backbone.pretrained_cfg

    if not name.startswith(("vit", "deit")):  # timm: global_pool="" in __init__ gives the map
        bare = fastwin.create_model(name, num_classes=0, global_pool="", **fastwin_tiny(name)).eval()
        with torch.no_grad():
            assert bare(x).dim() == 4


@pytest.mark.parametrize("name", marked(SHARED))
def test_symbolic_trace(name):
    """torch.fx.symbolic_trace: same outputs in eval (at another input size too: the size-dependent
    helpers are graph calls), fused ops as leaf calls, every parameter trained through the train graph."""
    torch.manual_seed(0)
    model = fastwin.create_model(name, num_classes=5, **fastwin_tiny(name)).eval()
    gm = torch.fx.symbolic_trace(model)
    assert fx_fused_calls(gm) >= {ops.linear_gelu, ops.shifted_window_attention if name.startswith("swin")
                                  else ops.attention}
    assert not any(isinstance(m, torch.fx.Proxy) for m in gm.modules())
    with torch.no_grad():
        for size in (64, 80):
            x = torch.randn(2, 3, size, size)
            assert torch.equal(gm(x), model(x))
    model.train()
    gm = torch.fx.symbolic_trace(model)
    first(gm(torch.randn(2, 3, 64, 64))).mean().backward()
    assert all(p.grad is not None for p in gm.parameters())


@pytest.mark.parametrize("name,pools", [
    ("swin_tiny_patch4_window7_224", ("", "avg", "max", "avgmax", "catavgmax")),
    ("swinv2_tiny_window8_256", ("", "avg", "max", "avgmax", "catavgmax")),
    ("vit_tiny_patch16_224", ("", "token", "avg", "max", "avgmax")),
])
def test_pools_equal_timms(name, pools):
    """Same weights: after reset_classifier(0, pool) both libraries give the same pooled features."""
    timm = require_timm()
    torch.manual_seed(0)
    ref = timm.create_model(name, img_size=64, **tiny(name)).eval()
    model = fastwin.create_model(name, img_size=64, checkpoint=ref.state_dict(), **tiny(name)).eval()
    x = torch.randn(2, 3, 64, 64)
    for pool in pools:
        ref.reset_classifier(0, pool)
        model.reset_classifier(0, pool)
        assert model.head_hidden_size == ref.head_hidden_size, pool
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-6, msg=pool)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(0, "map" if name.startswith("vit") else "token")


UNIFORMER = dict(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16)


@pytest.mark.parametrize("name", fastwin.list_models("uniformer_*"))
def test_uniformer_surface_and_trace(name):
    """UniFormer (not in timm): the same surface and torch.fx equality."""
    torch.manual_seed(0)
    model = fastwin.create_model(name, num_classes=5, **UNIFORMER).eval()
    x = torch.randn(2, 3, 64, 64)
    gm = torch.fx.symbolic_trace(model)
    assert fx_fused_calls(gm) >= {ops.attention, ops.linear_gelu}
    assert {ops.dwconv2d, ops.dwconv_layernorm} <= {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert torch.equal(gm(x), model(x))  # with grad: the module arithmetic on both sides
    with torch.no_grad():  # eval inference folds BatchNorm into the 1x1 convs (the trace keeps it): rounding apart
        torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-6)
        feats = model.forward_features(x)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
        model.reset_classifier(0, "catavgmax")
        assert model(x).shape == (2, 2 * model.num_features) == (2, model.head_hidden_size)
        model.reset_classifier(0, "")
        assert torch.equal(model(x), feats)
    backbone = fastwin.create_model(name, features_only=True, feature_cls="fx", **UNIFORMER).eval()
    with torch.no_grad():
        maps = backbone(x)
    assert [m.shape[1] for m in maps] == backbone.feature_info.channels()


def test_bad_feature_cls_is_refused_before_the_constructor():
    with pytest.raises(ValueError, match="feature_cls must be one of.*'fx'"):
        fastwin.create_model("swin_tiny_patch4_window7_224", features_only=True, feature_cls="graph")
    with pytest.raises(TypeError, match="cannot wrap"):
        fastwin.create_model("swin_tiny_patch4_window7_224", features_only=True, feature_cls=FeatureMaps)
    fx = fastwin.create_model("swinv2_tiny_window8_256", features_only=True, feature_cfg=dict(feature_cls="fx"),
                              **tiny("swin"))
    assert isinstance(fx, FeatureGraph) and isinstance(fx.graph_module, torch.fx.GraphModule)
    # the train graph and the eval graph share the backbone's parameters; conversions reach both
    eval_graph = fx.__dict__["_eval_graph"]
    assert {id(p) for p in fx.parameters()} == {id(p) for p in eval_graph.parameters()}
    fx.double()
    assert {t.dtype for t in eval_graph.state_dict().values()} == {torch.float64}


# ------------------------------------------------------------------------------ fx feature extraction

FX_NAMES = ["swin_tiny_patch4_window7_224", "vit_tiny_patch16_224"]


def _check_graph_features(model, maps, name):
    """`maps`: graph outputs of the feature_info modules; equal to forward_intermediates' maps."""
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        want = model.forward_intermediates(x, output_fmt="NHWC" if name.startswith("swin") else "NLC",
                                           intermediates_only=True)
        got = maps(x)
    got = list(got.values()) if isinstance(got, dict) else got
    if not name.startswith("swin"):
        got = [g[:, model.num_prefix_tokens:] for g in got]  # block outputs carry the class token
    assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("name", FX_NAMES)
def test_timm_fx_feature_path(name):
    """timm's FeatureGraphNet (its `feature_cls="fx"`) on a fastwin model; without torchvision its
    extractor is tests/fx_features.py."""
    timm = require_timm()
    install(timm)
    torch.manual_seed(0)
    model = fastwin.create_model(name, **tiny(name)).eval()
    graph = timm.models.FeatureGraphNet(model, out_indices=tuple(range(len(model.feature_info))))
    assert fx_fused_calls(graph.graph_module)
    _check_graph_features(model, graph, name)


@pytest.mark.parametrize("name", FX_NAMES)
def test_torchvision_create_feature_extractor(name):
    if "torchvision" in placeholders():
        pytest.skip("torchvision is not installed (timm runs on placeholders here)")
    fe = pytest.importorskip("torchvision.models.feature_extraction")
    torch.manual_seed(0)
    model = fastwin.create_model(name, **tiny(name)).eval()
    nodes = [f["module"] for f in model.feature_info]
    _check_graph_features(model, fe.create_feature_extractor(model, return_nodes=nodes), name)


def test_fx_stand_in_matches_module_outputs():
    """The stand-in extractor itself: module outputs equal forward hooks' on a fastwin Swin."""
    torch.manual_seed(0)
    model = fastwin.create_model("swin_tiny_patch4_window7_224", **tiny("swin")).eval()
    paths = ["layers.0", "layers.1.blocks.0", "norm"]
    seen = {}
    handles = [model.get_submodule(p).register_forward_hook(lambda m, a, o, p=p: seen.__setitem__(p, o))
               for p in paths]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(x)
        for h in handles:
            h.remove()
        got = create_feature_extractor(model, paths)(x)
    assert all(torch.equal(got[p], seen[p]) for p in paths)


@pytest.mark.parametrize("name,kind,op", [
    ("swin_tiny_patch4_window7_224", "swin_block", ops.shifted_window_attention),
    ("swinv2_tiny_window8_256", "swin_v2_block", ops.shifted_window_attention),
    ("vit_tiny_patch16_224", "Attention", ops.attention),
])
def test_swapped_timm_model_traces(name, kind, op):
    """A timm model after fastwin.swap traces like fastwin's own (fused ops as leaf calls)."""
    timm = require_timm()
    torch.manual_seed(0)
    kw = tiny(name) if name.startswith("swin") else dict(depth=2, embed_dim=32, num_heads=2)
    ref = timm.create_model(name, img_size=(64, 96), **kw).eval()
    x = torch.randn(1, 3, 64, 96)
    model, report = fastwin.swap(ref)
    assert report.counts().get(kind) == (4 if name.startswith("swin") else 2), str(report)
    gm = torch.fx.symbolic_trace(model)
    assert op in fx_fused_calls(gm)
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
    if name.startswith("vit"):  # timm's attn_mask argument: still refused when the graph runs with one
        with pytest.raises(ValueError, match="attn_mask"):
            gm(x, torch.zeros(1, 1, 25, 25))
