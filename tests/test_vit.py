"""fastwin ViT and hybrid R-ViT against the literal timm-semantics models in tests/vit_literal.py
(and against timm itself where timm imports)."""
import copy

import pytest
import torch
import vit_literal as lit
from timm_compat import require_timm

import fastwin
from fastwin.layers import Attention
from fastwin.models.vit import VisionTransformer, resample_abs_pos_embed
from tests.helpers import randomize, rel_err

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4)
REAL = {
    "vit_tiny_patch16_224": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small_patch16_224": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16_224": dict(embed_dim=1024, depth=24, num_heads=16),
}



def _pair(global_pool="token", **cfg):
    cfg = dict(SMALL, **cfg)
    ref = randomize(lit.VisionTransformer(num_classes=7, global_pool=global_pool, **cfg))
    model = VisionTransformer(num_classes=7, global_pool=global_pool, **cfg)
    fastwin.load_checkpoint(model, ref.state_dict())
    return model, ref


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_config_state_dict_matches_timm_layout(name):
    with torch.device("meta"):
        ours = fastwin.create_model(name).state_dict()
        ref = lit.VisionTransformer(**REAL[name]).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}


@pytest.mark.parametrize("global_pool", ["token", "avg"])
def test_forward_matches_literal(global_pool):
    model, ref = _pair(global_pool)
    x = torch.randn(2, 3, 32, 32)
    for mode in ("train", "eval"):
        getattr(model, mode)(), getattr(ref, mode)()
        assert rel_err(model(x), ref(x)) < 1e-5, mode
    if global_pool == "avg":
        assert "fc_norm.weight" in model.state_dict() and "norm.weight" not in model.state_dict()


def test_layernorm_eps_matches_timm():
    model, ref = _pair()
    eps = {n: m.eps for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    assert eps == {n: m.eps for n, m in ref.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    assert set(eps.values()) == {1e-6}


def test_backward_matches_literal():
    model, ref = _pair()
    x = torch.randn(2, 3, 32, 32)
    (model(x) ** 2).sum().backward()
    (ref(x) ** 2).sum().backward()
    grads = dict(ref.named_parameters())
    for k, p in model.named_parameters():
        assert (p.grad - grads[k].grad).abs().max() <= 1e-4 * grads[k].grad.abs().max() + 1e-7, k


@pytest.mark.parametrize("size", [(48, 64), (16, 24)])
def test_pos_embed_interpolation_other_sizes(size):
    model, ref = _pair()
    model.eval(), ref.eval()
    x = torch.randn(2, 3, *size)
    assert rel_err(model(x), ref(x)) < 1e-5
    assert model.forward_features(x).shape == (2, 1 + (size[0] // 8) * (size[1] // 8), 64)


def test_resample_abs_pos_embed_semantics():
    pe = torch.randn(1, 1 + 16, 8)
    assert resample_abs_pos_embed(pe, (4, 4)) is pe  # same grid: untouched
    out = resample_abs_pos_embed(pe, (2, 6))
    assert out.shape == (1, 1 + 12, 8)
    assert torch.equal(out[:, :1], pe[:, :1])  # the class token's embedding is not interpolated
    # a constant grid stays constant under bicubic resampling
    const = torch.cat([pe[:, :1], torch.full((1, 16, 8), 0.7)], 1)
    assert torch.allclose(resample_abs_pos_embed(const, (7, 5))[:, 1:], torch.tensor(0.7), atol=1e-5)
    with pytest.raises(ValueError, match="square"):
        resample_abs_pos_embed(torch.randn(1, 1 + 15, 8), (4, 4))


def test_checkpoint_filter_resamples_pos_embed(tmp_path):
    model, ref = _pair()
    sd = ref.state_dict()
    big = VisionTransformer(num_classes=7, **dict(SMALL, img_size=48))  # 6x6 grid from a 4x4 checkpoint
    path = tmp_path / "vit.pth"
    torch.save({"state_dict": sd}, path)
    fastwin.load_checkpoint(big, str(path))
    want = resample_abs_pos_embed(sd["pos_embed"], (6, 6), (4, 4), 1)
    assert torch.allclose(big.pos_embed, want)
    big.eval(), ref.eval()
    x = torch.randn(1, 3, 48, 48)
    assert rel_err(big(x), ref(x)) < 1e-5  # same function as the 32px model interpolating on the fly


def test_checkpoint_round_trip_and_bad_checkpoints():
    model, ref = _pair()
    fresh = VisionTransformer(num_classes=7, **SMALL)
    fastwin.load_checkpoint(fresh, {"model": model.state_dict()})
    x = torch.randn(1, 3, 32, 32)
    fresh.eval(), model.eval()
    assert torch.equal(fresh(x), model(x))
    before = copy.deepcopy(fresh.state_dict())
    for corrupt, key in [
        (lambda sd: sd.pop("blocks.1.mlp.fc2.bias"), "blocks.1.mlp.fc2.bias"),
        (lambda sd: sd.__setitem__("dist_token", torch.zeros(1, 1, 64)), "dist_token"),
        (lambda sd: sd.__setitem__("head.weight", torch.zeros(8, 64)), "head.weight"),
        (lambda sd: sd.__setitem__("pos_embed", torch.zeros(1, 17, 32)), "pos_embed"),
    ]:
        sd = randomize(copy.deepcopy(ref), seed=3).state_dict()
        corrupt(sd)
        with pytest.raises(ValueError, match=key):
            fastwin.load_checkpoint(fresh, sd)
        for k, v in fresh.state_dict().items():
            assert torch.equal(v, before[k]), k


def test_swap_timm_style_attention():
    ref = randomize(lit.VisionTransformer(num_classes=7, **SMALL)).eval()
    x = torch.randn(2, 3, 32, 32)
    want = ref(x)
    _, report = fastwin.swap(ref)
    assert report.counts() == {"Attention": 2}
    assert all(isinstance(b.attn, Attention) for b in ref.blocks)
    assert rel_err(ref(x), want) < 1e-5
    with pytest.raises(ValueError, match="attn_mask"):
        ref.blocks[0].attn(torch.randn(1, 3, 64), attn_mask=torch.zeros(3, 3))
    _, again = fastwin.swap(ref)
    assert len(again) == 0  # fastwin modules are not swapped twice


def test_surface_and_grad_checkpointing():
    model, _ = _pair()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    feats = model.forward_features(x)
    assert feats.shape == (2, 17, 64)
    assert torch.equal(model.forward_head(feats, pre_logits=True), feats[:, 0])
    g0 = torch.autograd.grad(model(x).sum(), x)[0]
    model.set_grad_checkpointing(True)
    g1 = torch.autograd.grad(model(x).sum(), x)[0]
    assert torch.allclose(g0, g1, atol=1e-6)
    model.reset_classifier(0, "avg")
    assert model(x).shape == (2, 64)
    model.reset_classifier(0, "max")  # timm's token pools: max and avgmax too
    assert torch.equal(model(x), model.forward_features(x)[:, 1:].amax(dim=1))
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, "map")  # timm's attention pooling: not in fastwin
    with pytest.raises(ValueError, match="class_token"):
        VisionTransformer(class_token=False, **SMALL)


def test_bad_inputs():
    model, _ = _pair()
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError):
        model(torch.randn(3, 32, 32))
    with pytest.raises(TypeError):
        model("image")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        VisionTransformer(embed_dim=30, num_heads=4)


# -- hybrid --------------------------------------------------------------------------------------------

HYB = dict(layers=(1, 1, 1, 1), channels=(128, 128, 128, 256))


def test_hybrid_matches_literal_and_loads_timm_layout():
    ref = randomize(lit.hybrid_vit(64, HYB["layers"], HYB["channels"], 64, 1, 2, 5))
    model = fastwin.create_model("vit_small_r26_s32_224", img_size=64, embed_dim=64, depth=1, num_heads=2,
                                 num_classes=5, **HYB)
    fastwin.load_checkpoint(model, ref.state_dict())
    assert model.grid_size == (2, 2)
    model.eval(), ref.eval()
    x = torch.randn(2, 3, 64, 64)
    assert rel_err(model(x), ref(x)) < 1e-5
    x = torch.randn(1, 3, 70, 50)  # odd sizes: TF-same padding goes bottom/right, pos embed resampled
    assert rel_err(model(x), ref(x)) < 1e-5


def test_hybrid_real_config_shapes():
    with torch.device("meta"):
        m = fastwin.create_model("vit_small_r26_s32_224")
        t = fastwin.create_model("vit_tiny_r_s16_p8_224")
    assert m.grid_size == (7, 7) and tuple(m.pos_embed.shape) == (1, 50, 384)
    assert tuple(m.state_dict()["patch_embed.proj.weight"].shape) == (384, 2048, 1, 1)
    assert "patch_embed.backbone.stages.3.blocks.1.conv3.weight" in m.state_dict()
    assert t.grid_size == (7, 7) and tuple(t.state_dict()["patch_embed.proj.weight"].shape) == (192, 64, 8, 8)


# -- timm itself (installed on the GPU machine, not everywhere) ---------------------------------------


def _timm():
    return require_timm()  # stands in for a missing torchvision; skips when timm is absent


@pytest.mark.parametrize("name,kwargs", [
    ("vit_small_patch16_224", dict(depth=2)),
    ("vit_small_patch16_224", dict(depth=2, global_pool="avg")),
    ("deit_tiny_distilled_patch16_224", dict(depth=2)),
    ("vit_small_r26_s32_224", dict(depth=1)),
    ("vit_tiny_r_s16_p8_224", dict(depth=1)),
])
def test_against_timm(name, kwargs):
    timm = _timm()
    ref = timm.create_model(name, pretrained=False, num_classes=11, **kwargs).eval()
    randomize(ref)
    model = fastwin.create_model(name, num_classes=11, **kwargs)
    fastwin.load_checkpoint(model, ref.state_dict())
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-4
    swapped = copy.deepcopy(ref)
    _, report = fastwin.swap(swapped)
    assert report.counts().get("Attention") == kwargs["depth"]
    with torch.no_grad():
        assert rel_err(swapped(x), ref(x)) < 1e-4
