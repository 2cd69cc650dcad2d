"""timm's backbone and model-building surface on fastwin models: `forward_intermediates`,
`features_only` / `out_indices` / `output_fmt`, `feature_info`, `pretrained_cfg`, `pretrained=True`
from a local file and tagged names — against timm itself where timm imports."""
import pytest
import torch
from timm_compat import require_timm

import fastwin
from fastwin.models.features import FeatureMaps, feature_take_indices
from tests.helpers import randomize, rel_err

pytestmark = pytest.mark.usefixtures("one_thread")

SWIN = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
UNIFORMER = dict(depth=(1, 1, 2, 1), embed_dim=(16, 32, 64, 128), head_dim=16)
VIT = dict(depth=4, embed_dim=64, num_heads=2)
TINY = {"swin": SWIN, "swinv2": dict(SWIN, window_size=8), "uniformer": UNIFORMER, "vit": VIT, "deit": VIT}
CFG_KEYS = ("architecture", "tag", "input_size", "interpolation", "crop_pct", "mean", "std", "num_classes",
            "first_conv", "classifier")


def tiny(name):
    return TINY[name.split("_")[0]]


# ------------------------------------------------------------------------------ fastwin alone

def test_feature_take_indices():
    assert feature_take_indices(4) == ([0, 1, 2, 3], 3)
    assert feature_take_indices(4, 2) == ([2, 3], 3)
    assert feature_take_indices(4, (0, -2)) == ([0, 2], 2)
    for bad in (0, 5, (4,), (-5,), ()):
        with pytest.raises(ValueError):
            feature_take_indices(4, bad)


@pytest.mark.parametrize("name,size,channels,reduction", [
    ("swin_tiny_patch4_window7_224", (72, 100), [16, 32, 64, 128], [4, 8, 16, 32]),
    ("swinv2_tiny_window8_256", (72, 100), [16, 32, 64, 128], [4, 8, 16, 32]),
    ("uniformer_small", (64, 96), [16, 32, 64, 128], [4, 8, 16, 32]),
])
def test_hierarchical_features_only(name, size, channels, reduction):
    torch.manual_seed(0)
    full = fastwin.create_model(name, num_classes=3, **tiny(name)).eval()
    feats = fastwin.create_model(name, features_only=True, checkpoint=full.state_dict(), **tiny(name)).eval()
    assert isinstance(feats, FeatureMaps)
    assert feats.feature_info.channels() == channels and feats.feature_info.reduction() == reduction
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        maps = feats(x)
        want = full.forward_intermediates(x, output_fmt="NCHW", intermediates_only=True)
    native = full.output_fmt
    assert len(maps) == 4
    for m, w, c, r in zip(maps, want, channels, reduction):
        shape_nchw = (2, c, -(-size[0] // r), -(-size[1] // r))
        got = m.permute(0, 3, 1, 2) if native == "NHWC" else m
        assert tuple(got.shape) == shape_nchw
        torch.testing.assert_close(got, w)
    # other formats and subsets; pruning drops what the last requested stage does not need
    nchw = fastwin.create_model(name, features_only=True, out_indices=(1, -1), output_fmt="NCHW",
                                checkpoint=full.state_dict(), **tiny(name)).eval()
    nhwc = fastwin.create_model(name, features_only=True, out_indices=(0, 1), output_fmt="NHWC",
                                checkpoint=full.state_dict(), **tiny(name)).eval()
    assert nchw.feature_info.channels() == [channels[1], channels[3]]
    assert sum(p.numel() for p in nhwc.parameters()) < sum(p.numel() for p in nchw.parameters())
    with torch.no_grad():
        a, b = nchw(x), nhwc(x)
    torch.testing.assert_close(a[0], want[1])
    torch.testing.assert_close(a[1], want[3])
    torch.testing.assert_close(b[1], want[1].permute(0, 2, 3, 1))


@pytest.mark.parametrize("name", ["swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256", "uniformer_small",
                                  "vit_small_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_forward_intermediates_contract(name):
    torch.manual_seed(0)
    model = fastwin.create_model(name, num_classes=3, **tiny(name)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x, indices=2, norm=True)
        torch.testing.assert_close(final, model.forward_features(x))
        torch.testing.assert_close(model.forward_head(final), model(x))
        early = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], model.forward_intermediates(x, indices=[0], intermediates_only=True)[0])
    assert len(maps) == 2 and len(model.feature_info) >= 4
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NCL")
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[99])


def test_vit_features_only_default_and_prefix_tokens():
    torch.manual_seed(0)
    model = fastwin.create_model("deit_tiny_distilled_patch16_224", **VIT).eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        out = model.forward_intermediates(x, indices=[1], return_prefix_tokens=True, output_fmt="NLC",
                                          intermediates_only=True)
        feats = fastwin.create_model("deit_tiny_distilled_patch16_224", features_only=True,
                                     checkpoint=model.state_dict(), **VIT).eval()
        maps = feats(x)
    tokens, prefix = out[0]
    assert tokens.shape == (2, 20, 64) and prefix.shape == (2, 2, 64)
    assert feats.out_indices == (1, 2, 3)  # timm's default for ViTs: the last 3 blocks
    assert [tuple(m.shape) for m in maps] == [(2, 64, 4, 5)] * 3
    assert len(feats.model.blocks) == 4


@pytest.mark.parametrize("order", ["roll_pad", "pad_roll"])
def test_swin_backbone_keeps_either_pad_order(order):
    """Detection-style backbones pad before rolling; both orders build backbones, and they differ only
    where a shifted window is padded."""
    torch.manual_seed(0)
    full = fastwin.create_model("swin_tiny_patch4_window7_224", **SWIN)
    sd = full.state_dict()
    feats = fastwin.create_model("swin_tiny_patch4_window7_224", features_only=True, pad_order=order, checkpoint=sd,
                                 **SWIN).eval()
    other = fastwin.create_model("swin_tiny_patch4_window7_224", features_only=True, checkpoint=sd,
                                 pad_order="pad_roll" if order == "roll_pad" else "roll_pad", **SWIN).eval()
    assert {b.pad_order for layer in feats.model.layers for b in layer.blocks} == {order}
    with torch.no_grad():
        x = torch.randn(1, 3, 224, 224)  # every map divisible by its window: the orders agree
        same = [rel_err(a, b) for a, b in zip(feats(x), other(x))]
        x = torch.randn(1, 3, 200, 136)
        diff = [rel_err(a, b) for a, b in zip(feats(x), other(x))]
    assert len(same) == 4 and max(same) < 1e-5
    assert diff[0] > 1e-4  # 50x34 map, window 7: padded and shifted


def small_variant(name):
    """Overrides that keep each registered model's structure (stems, heads, windows) but make it tiny."""
    if name.startswith("swin"):
        return dict(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    if name.startswith("uniformer"):
        return dict(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16)
    extra = dict(layers=(1, 1, 1, 1)) if name == "vit_small_r26_s32_224" else {}
    return dict(depth=1, embed_dim=32, num_heads=1, **extra)


def test_every_model_has_pretrained_cfg_and_optimizer_surface():
    for name in fastwin.list_models():
        model = fastwin.create_model(name, **small_variant(name))
        cfg = model.pretrained_cfg
        assert all(k in cfg for k in CFG_KEYS), (name, [k for k in CFG_KEYS if k not in cfg])
        assert cfg["architecture"] == name and cfg["input_size"][0] == 3
        modules = dict(model.named_modules())
        first = cfg["first_conv"]
        assert isinstance(modules.get(first), torch.nn.Conv2d), (name, first)
        heads = (cfg["classifier"],) if isinstance(cfg["classifier"], str) else cfg["classifier"]
        assert all(isinstance(modules.get(h), torch.nn.Linear) for h in heads), (name, heads)
        names = {n for n, _ in model.named_parameters()}
        nwd = model.no_weight_decay()
        assert isinstance(nwd, set) and nwd <= names | {"dist_token", "cls_token", "pos_embed"}, name
        assert model.group_matcher() is not None and model.group_matcher(coarse=True) is not None
        assert len(model.feature_info) >= 1 and model.feature_info[-1]["num_chs"] > 0
        del model


def test_pretrained_from_local_file_and_tags(tmp_path):
    torch.manual_seed(0)
    src = randomize(fastwin.create_model("swin_tiny_patch4_window7_224", **SWIN)).eval()
    path = tmp_path / "w.pth"
    torch.save({"model": src.state_dict()}, path)
    model = fastwin.create_model("swin_tiny_patch4_window7_224.ms_in1k", pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(path)), **SWIN).eval()
    assert model.pretrained_cfg["tag"] == "ms_in1k" and model.pretrained_cfg["file"] == str(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x))
    # another number of classes: the classifier is re-initialized, everything else loads
    ten = fastwin.create_model("swin_tiny_patch4_window7_224", pretrained=True, num_classes=10,
                               pretrained_cfg_overlay=dict(file=path), **SWIN)
    torch.testing.assert_close(ten.layers[0].blocks[0].attn.qkv.weight, src.layers[0].blocks[0].attn.qkv.weight)
    assert ten.head.out_features == 10
    feats = fastwin.create_model("swin_tiny_patch4_window7_224", pretrained=True, features_only=True,
                                 pretrained_cfg_overlay=dict(file=path), **SWIN).eval()
    with torch.no_grad():
        torch.testing.assert_close(feats(x)[-1].permute(0, 3, 1, 2),
                                   src.forward_intermediates(x, intermediates_only=True)[-1])
    with pytest.raises(ValueError, match="bundles and downloads no pretrained weights"):
        fastwin.create_model("swin_tiny_patch4_window7_224", pretrained=True)
    with pytest.raises(ValueError, match="unknown model"):
        fastwin.create_model("swin_tiny_patch4_window7.ms_in1k")
    bad = {k: v for k, v in src.state_dict().items() if "blocks.0.mlp" not in k}
    with pytest.raises(ValueError, match="missing keys"):
        fastwin.create_model("swin_tiny_patch4_window7_224", pretrained=True, **SWIN,
                             pretrained_cfg_overlay=dict(file=_save(tmp_path / "bad.pth", bad)))


def test_pretrained_safetensors(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    src = fastwin.create_model("deit_tiny_patch16_224", **VIT).eval()
    path = tmp_path / "w.safetensors"
    st.save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model = fastwin.create_model("deit_tiny_patch16_224.fb_in1k", pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(path)), **VIT).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x))


def _save(path, sd):
    torch.save(sd, path)
    return str(path)


# ------------------------------------------------------------------------------ against timm

@pytest.mark.parametrize("img_size", [224, (256, 320)])
def test_swin_features_only_equals_timm(img_size, tmp_path):
    """Same weights (a timm file loaded the timm way by both libraries): every stage map equal."""
    timm = require_timm()
    torch.manual_seed(0)
    ref = randomize(timm.create_model("swin_tiny_patch4_window7_224", img_size=img_size, **SWIN)).eval()
    path = tmp_path / "timm_swin.pth"
    torch.save(ref.state_dict(), path)
    kw = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), img_size=img_size, **SWIN)
    size = (img_size, img_size) if isinstance(img_size, int) else img_size
    x = torch.randn(2, 3, *size)
    for out_indices in [(0, 1, 2, 3), (1, 3)]:
        theirs = timm.create_model("swin_tiny_patch4_window7_224", features_only=True, out_indices=out_indices,
                                   **kw).eval()
        ours = fastwin.create_model("swin_tiny_patch4_window7_224", features_only=True, out_indices=out_indices,
                                    **kw).eval()
        assert ours.feature_info.channels() == theirs.feature_info.channels()
        assert ours.feature_info.reduction() == theirs.feature_info.reduction()
        with torch.no_grad():
            want, got = theirs(x), ours(x)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape  # NHWC, as timm's Swin backbones
            assert rel_err(g, w) < 1e-5
    full = fastwin.create_model("swin_tiny_patch4_window7_224", **kw).eval()
    with torch.no_grad():
        fx, fmaps = full.forward_intermediates(x, indices=[1, -1], norm=True)
        rx, rmaps = ref.forward_intermediates(x, indices=[1, -1], norm=True)
    assert rel_err(fx, rx) < 1e-5 and all(rel_err(a, b) < 1e-5 for a, b in zip(fmaps, rmaps))


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_vit_forward_intermediates_equal_timm(name):
    timm = require_timm()
    torch.manual_seed(0)
    ref = randomize(timm.create_model(name, **VIT)).eval()
    model = fastwin.create_model(name, checkpoint=ref.state_dict(), **VIT).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        for kw in [dict(), dict(indices=2, norm=True), dict(indices=[0, -1], output_fmt="NLC")]:
            fx, fmaps = model.forward_intermediates(x, **kw)
            rx, rmaps = ref.forward_intermediates(x, **kw)
            assert rel_err(fx, rx) < 1e-5 and all(rel_err(a, b) < 1e-5 for a, b in zip(fmaps, rmaps))
        theirs = timm.create_model(name, features_only=True, **VIT)
        theirs.load_state_dict({"model." + k: v for k, v in ref.state_dict().items()
                                if "model." + k in theirs.state_dict()})
        ours = fastwin.create_model(name, features_only=True, checkpoint=ref.state_dict(), **VIT)
        assert ours.feature_info.channels() == theirs.feature_info.channels()
        assert ours.feature_info.reduction() == theirs.feature_info.reduction()
        assert all(rel_err(a, b) < 1e-5 for a, b in zip(ours.eval()(x), theirs.eval()(x)))


def test_timm_data_config_reads_pretrained_cfg():
    timm = require_timm()
    from timm.data import resolve_data_config

    for name in ("swin_base_patch4_window12_384", "swinv2_tiny_window8_256", "vit_small_patch16_224",
                 "uniformer_small"):
        model = fastwin.create_model(name, **small_variant(name))
        ref_cfg = resolve_data_config({}, model=model)
        assert ref_cfg["input_size"] == model.pretrained_cfg["input_size"]
        assert ref_cfg["mean"] == model.pretrained_cfg["mean"]
        if name in timm.list_models():
            want = timm.models.get_pretrained_cfg(name)
            for key in ("input_size", "crop_pct", "interpolation", "mean", "std", "num_classes", "first_conv"):
                assert model.pretrained_cfg[key] == getattr(want, key), (name, key)
