"""Swin family: block/op parity with literal implementations, model parity with official- and timm-style
models, checkpoint layouts, swap, gradient checkpointing and bad input.

The oracles live in `tests/swin_literal.py` and never import fastwin.
"""
import copy

import pytest
import swin_literal as lit
import torch
import torch.nn as nn
from timm_compat import require_timm

import fastwin
from fastwin.layers.swin_block import PatchMerging, SwinTransformerBlock
from fastwin.models.swin import SwinTransformer
from fastwin.swap.swin import _SwinBlockHW
from tests.helpers import rel_err

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7)
SWIN_T = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)



def fastwin_model(img_size, cfg=TINY, num_classes=10, **kw):
    kw.setdefault("drop_path_rate", 0.0)
    return SwinTransformer(img_size=img_size, num_classes=num_classes, **cfg, **kw).eval()


def official_model(img_size=224, cfg=TINY, num_classes=10):
    return lit.OfficialSwin(img_size=img_size, num_classes=num_classes, **cfg).eval()


def timm_model(img_size, cfg=TINY, num_classes=10):
    return lit.TimmSwin(img_size=img_size, num_classes=num_classes, **cfg).eval()


def params_snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------ block / op parity

BLOCK_CASES = [(14, 14, 0), (14, 14, 3), (13, 17, 0), (13, 17, 3), (5, 9, 3), (8, 20, 3)]


@pytest.mark.parametrize("H,W,shift", BLOCK_CASES)
def test_block_roll_pad_matches_timm_literal(H, W, shift):
    ref = lit.TimmBlock(32, (H, W), 2, 7, shift).eval()
    lit._randomize(ref)
    blk = SwinTransformerBlock(32, (H, W), 2, 7, shift).eval()
    assert (blk.window_size, blk.shift_size) == (ref.window_size, ref.shift_size)  # per-dim shrink
    blk.load_state_dict(ref.state_dict())
    x = torch.randn(2, H, W, 32)
    assert rel_err(blk(x), ref(x)) < 1e-5


@pytest.mark.parametrize("H,W,shift", BLOCK_CASES)
def test_block_pad_roll_matches_detection_literal(H, W, shift):
    ref = lit.DetectionBlock(32, 2, 7, shift).eval()
    lit._randomize(ref)
    blk = SwinTransformerBlock(32, None, 2, 7, shift, pad_order="pad_roll").eval()
    blk.load_state_dict(ref.state_dict())  # the persistent relative_position_index is dropped
    ref.H, ref.W = H, W
    Hp, Wp = -(-H // 7) * 7, -(-W // 7) * 7
    mask = lit.build_attn_mask(Hp, Wp, 7, 7, 3, 3)
    x = torch.randn(2, H * W, 32)
    assert rel_err(blk(x.view(2, H, W, 32)).view(2, H * W, 32), ref(x, mask)) < 1e-5


def test_pad_orders_differ_where_they_should():
    """Guard against a test that cannot fail: on a shifted, padded map the two orders disagree."""
    blk = SwinTransformerBlock(32, None, 2, 7, 3).eval()
    lit._randomize(blk)
    x = torch.randn(1, 10, 12, 32)
    a = blk(x)
    blk.pad_order = "pad_roll"
    assert rel_err(blk(x), a) > 1e-3


def test_block_backward_matches_literal():
    ref = lit.TimmBlock(32, (13, 17), 2, 7, 3)
    lit._randomize(ref)
    blk = SwinTransformerBlock(32, (13, 17), 2, 7, 3)
    blk.load_state_dict(ref.state_dict())
    x = torch.randn(2, 13, 17, 32)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(2, 13, 17, 32)
    (ref(xa) * g).sum().backward()
    (blk(xb) * g).sum().backward()
    assert rel_err(xb.grad, xa.grad) < 1e-5
    for name, p in ref.named_parameters():
        assert rel_err(dict(blk.named_parameters())[name].grad, p.grad) < 1e-5, name


@pytest.mark.parametrize("res,window,shift", [((7, 7), 7, 0), ((4, 4), 4, 0), ((14, 14), 7, 3)])
def test_official_window_shrink_tokens_input(res, window, shift):
    ref = lit.OfficialBlock(32, res, 2, 7, 3).eval()
    lit._randomize(ref)
    blk = SwinTransformerBlock(32, res, 2, 7, 3).eval()
    assert blk.window_size == (window, window) and blk.shift_size == (shift, shift)
    blk.load_state_dict(ref.state_dict())  # carries attn_mask + relative_position_index
    x = torch.randn(2, res[0] * res[1], 32)
    assert rel_err(blk(x), ref(x)) < 1e-5


def test_patch_merging_odd_map_and_tokens():
    pm = PatchMerging((5, 7), 8)
    lit._randomize(pm)
    ref = lit.TimmPatchMerging(8)
    ref.load_state_dict(pm.state_dict())
    x = torch.randn(2, 5, 7, 8)
    y = pm(x)
    assert y.shape == (2, 3, 4, 16)
    assert rel_err(y, ref(x)) < 1e-6
    assert torch.equal(pm(x.flatten(1, 2)), y.flatten(1, 2))


# --------------------------------------------------------------------------------------- model parity

def test_tiny_matches_official_style():
    ref = official_model(224)
    model = fastwin.load_checkpoint(fastwin_model(224), ref.state_dict())
    assert [(b.window_size, b.shift_size) for b in model.layers[3].blocks] == [((7, 7), (0, 0))] * 2
    assert model.layers[2].blocks[1].shift_size == (3, 3)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-5


def test_swin_t_matches_official_style_at_224():
    ref = official_model(224, SWIN_T, 1000)
    model = fastwin.create_model("swin_tiny_patch4_window7_224", checkpoint=ref.state_dict()).eval()
    assert all(b.shift_size == (0, 0) and b.window_size == (7, 7) for b in model.layers[3].blocks)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-5


@pytest.mark.parametrize("img_size", [(256, 320), (224, 160), (192, 288), (52, 76), (100, 60)])
def test_tiny_matches_timm_style(img_size):
    ref = timm_model(img_size)
    model = fastwin.load_checkpoint(fastwin_model(img_size), ref.state_dict())
    x = torch.randn(1, 3, *img_size)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-5


def test_fixed_img_size_runs_other_sizes_like_timm():
    """Built for 224, fed 256x320: windows as decided at construction, mask from the actual map."""
    ref = timm_model(224)
    model = fastwin.load_checkpoint(fastwin_model(224), ref.state_dict())
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-5


def test_swin_t_matches_timm_style_at_256x320():
    ref = timm_model((256, 320), SWIN_T, 1000)
    model = fastwin.create_model("swin_tiny_patch4_window7_224", img_size=(256, 320),
                                 checkpoint=ref.state_dict()).eval()
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-5


def test_model_surface():
    model = fastwin_model(64)
    x = torch.randn(2, 3, 70, 50)  # not a multiple of the patch: padded
    feats = model.forward_features(x)
    assert feats.shape == (2, 3, 2, 128)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 128)
    assert model(x).shape == (2, 10)
    model.reset_classifier(0)
    assert model(x).shape == (2, 128)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.num_classes == 5
    names = {"swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224", "swin_base_patch4_window7_224",
             "swin_base_patch4_window12_384", "swin_large_patch4_window7_224", "swin_large_patch4_window12_384"}
    assert names <= set(fastwin.list_models("swin*"))


@pytest.mark.parametrize("name,millions", [
    ("swin_tiny_patch4_window7_224", 28.3), ("swin_small_patch4_window7_224", 49.6),
    ("swin_base_patch4_window7_224", 87.8), ("swin_large_patch4_window7_224", 196.5),
    ("swin_base_patch4_window12_384", 87.9), ("swin_large_patch4_window12_384", 196.7),
])
def test_published_parameter_counts(name, millions):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = fastwin.create_model(name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions
    if name.endswith("384"):
        assert model.layers[3].blocks[1].window_size == (12, 12) and model.layers[3].blocks[1].shift_size == (0, 0)


def test_drop_path_schedule():
    model = SwinTransformer(img_size=64, **TINY, drop_path_rate=0.3)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for layer in model.layers for b in layer.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.3, 8).tolist())


# ---------------------------------------------------------------------------------------- checkpoints

def test_checkpoint_official_roundtrip(tmp_path):
    ref = official_model(224)
    sd = ref.state_dict()
    assert any(k.endswith("attn_mask") for k in sd) and any(k.endswith("relative_position_index") for k in sd)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        want = ref(x)
        torch.save({"model": sd}, tmp_path / "official.pth")
        a = fastwin.load_checkpoint(fastwin_model(224), str(tmp_path / "official.pth"))
        assert rel_err(a(x), want) < 1e-5
        b = fastwin_model(224)
        b.load_state_dict(sd)  # plain torch loading of an official dict works too
        assert rel_err(b(x), want) < 1e-5
        # fastwin -> file -> fastwin, and fastwin -> official architecture
        torch.save({"state_dict": a.state_dict()}, tmp_path / "fastwin.pth")
        c = fastwin.load_checkpoint(fastwin_model(224), tmp_path / "fastwin.pth")
        assert torch.equal(c(x), a(x))
        back = official_model(224)
        missing, unexpected = back.load_state_dict(a.state_dict(), strict=False)
        assert not unexpected and all(k.endswith(("attn_mask", "relative_position_index")) for k in missing)
        assert rel_err(back(x), want) < 1e-6


def test_checkpoint_timm_roundtrip(tmp_path):
    ref = timm_model((96, 128))
    sd = ref.state_dict()
    assert "head.fc.weight" in sd and "layers.3.downsample.reduction.weight" in sd
    assert not any(k.startswith("layers.0.downsample") for k in sd)
    torch.save({"model": sd}, tmp_path / "timm.pth")
    model = fastwin.load_checkpoint(fastwin_model((96, 128)), tmp_path / "timm.pth")
    ours = model.state_dict()
    assert torch.equal(ours["layers.0.downsample.reduction.weight"], sd["layers.1.downsample.reduction.weight"])
    assert torch.equal(ours["head.weight"], sd["head.fc.weight"])
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-5


def _bad_dicts():
    sd = official_model(224).state_dict()
    missing = dict(sd)
    del missing["layers.1.blocks.0.attn.qkv.weight"]
    extra = dict(sd, **{"layers.0.blocks.0.attn.extra": torch.zeros(3)})
    shape = dict(sd)
    shape["layers.2.blocks.1.attn.relative_position_bias_table"] = torch.zeros(100, 2)
    return [(missing, "layers.1.blocks.0.attn.qkv.weight"), (extra, "layers.0.blocks.0.attn.extra"),
            (shape, "layers.2.blocks.1.attn.relative_position_bias_table")]


@pytest.mark.parametrize("case", range(3))
def test_bad_checkpoint_raises_and_leaves_model_unchanged(case):
    sd, key = _bad_dicts()[case]
    model = fastwin_model(224)
    before = params_snapshot(model)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        fastwin.load_checkpoint(model, sd)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ----------------------------------------------------------------------------------------------- swap

def test_swap_official_style_model():
    ref = official_model(224)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = ref(x)
    qkv_weight = ref.layers[0].blocks[1].attn.qkv.weight
    model, report = fastwin.swap(ref)
    assert report.counts() == {"swin_block": 8}, str(report)
    blk = model.layers[0].blocks[1]
    assert isinstance(blk, SwinTransformerBlock) and blk.attn.qkv.weight is qkv_weight  # shared, not copied
    assert isinstance(blk.attn, fastwin.WindowAttention)
    with torch.no_grad():
        assert rel_err(model(x), want) < 1e-5


@pytest.mark.parametrize("img_size", [(96, 128), (52, 76)])
def test_swap_timm_style_model(img_size):
    ref = timm_model(img_size)
    x = torch.randn(2, 3, *img_size)
    y = torch.randn(1, 3, 80, 112)  # another size: the swapped blocks keep the roll-then-pad order
    with torch.no_grad():
        want_x, want_y = ref(x), ref(y)
    model, report = fastwin.swap(ref)
    assert report.counts() == {"swin_block": 8}, str(report)
    assert all(b.pad_order == "roll_pad" for s in model.layers for b in s.blocks)
    with torch.no_grad():
        assert rel_err(model(x), want_x) < 1e-5
        assert rel_err(model(y), want_y) < 1e-5


def test_swap_detection_style_detects_pad_roll():
    layer = lit.DetectionLayer(32, 2, 2, 7).eval()
    x = torch.randn(2, 10 * 13, 32)
    with torch.no_grad():
        want = layer(x, 10, 13)
    layer, report = fastwin.swap(layer)
    assert report.counts() == {"swin_block": 2}, str(report)
    assert all(isinstance(b, _SwinBlockHW) and b.pad_order == "pad_roll" for b in layer.blocks)
    with torch.no_grad():
        assert rel_err(layer(x, 10, 13), want) < 1e-5


class _RescaledTimmBlock(lit.TimmBlock):
    """A third-party twist: something the fused block does not compute."""

    def forward(self, x):
        return super().forward(x) * 0.5 + x


def test_swap_unknown_block_swaps_attention_only():
    parent = nn.Sequential(_RescaledTimmBlock(32, (9, 11), 2, 7, 3)).eval()
    lit._randomize(parent)
    x = torch.randn(2, 9, 11, 32)
    with torch.no_grad():
        want = parent(x)
    parent, report = fastwin.swap(parent)
    assert report.counts() == {"swin_window_attention": 1}, str(report)
    assert isinstance(parent[0], _RescaledTimmBlock) and isinstance(parent[0].attn, fastwin.WindowAttention)
    with torch.no_grad():
        assert rel_err(parent(x), want) < 1e-5


def test_swap_keeps_training_working():
    ref = timm_model(64)
    model, _ = fastwin.swap(copy.deepcopy(ref))
    model.train(), ref.train()
    x = torch.randn(2, 3, 64, 64)
    ref(x).square().sum().backward()
    model(x).square().sum().backward()
    table = "layers.2.blocks.1.attn.relative_position_bias_table"
    got, want = dict(model.named_parameters())[table].grad, dict(ref.named_parameters())[table].grad
    assert rel_err(got, want) < 1e-5


# ------------------------------------------------------------------------------ gradient checkpointing

def test_grad_checkpointing_same_grads():
    model = SwinTransformer(img_size=64, num_classes=10, **TINY, drop_path_rate=0.2).train()
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        torch.manual_seed(0)  # same drop-path draws in both runs
        model(x).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert all(layer.grad_checkpointing for layer in model.layers)
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-6, msg=n)


# ---------------------------------------------------------------------------------------------- bad input

def test_bad_inputs():
    blk = SwinTransformerBlock(32, (7, 9), 2)
    with pytest.raises(ValueError, match="32 channels"):
        blk(torch.randn(1, 7, 9, 31))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        blk(torch.randn(7, 32))
    with pytest.raises(ValueError, match="63"):
        blk(torch.randn(1, 62, 32))
    with pytest.raises(TypeError):
        blk([[1.0] * 32])
    with pytest.raises(ValueError, match="input_resolution"):
        SwinTransformerBlock(32, None, 2)(torch.randn(1, 49, 32))
    with pytest.raises(ValueError, match="pad_order"):
        SwinTransformerBlock(32, None, 2, pad_order="pad_first")
    with pytest.raises(ValueError, match="channels"):
        PatchMerging(None, 8)(torch.randn(1, 4, 4, 9))
    model = fastwin_model(64)
    with pytest.raises(ValueError, match="3, H, W"):
        model(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="depths"):
        SwinTransformer(depths=(2, 2), num_heads=(1, 2, 4))


# ---------------------------------------------------------------------------------- real timm, if present

def _timm():
    return require_timm()  # stands in for a missing torchvision; skips when timm is absent


# 100 and (36, 52): stage sizes where floor and ceil halving differ, so the window shrinking differs
@pytest.mark.parametrize("img_size", [224, (256, 320), (224, 160), 100, (36, 52)])
def test_real_timm_weights_and_forward(img_size):
    timm = _timm()
    ref = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=img_size).eval()
    model = fastwin.create_model("swin_tiny_patch4_window7_224", img_size=img_size,
                                 checkpoint=ref.state_dict()).eval()
    size = (img_size, img_size) if isinstance(img_size, int) else img_size
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-5


def test_real_timm_swap():
    timm = _timm()
    ref = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=(256, 320)).eval()
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        want = ref(x)
    model, report = fastwin.swap(ref)
    assert report.counts().get("swin_block") == 12, str(report)
    with torch.no_grad():
        assert rel_err(model(x), want) < 1e-5
