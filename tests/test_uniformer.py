"""fastwin UniFormer against the literal official-semantics model in tests/uniformer_literal.py."""
import copy

import pytest
import torch
import uniformer_literal as lit

import fastwin
from fastwin.layers import Attention
from fastwin.models.uniformer import CBlock, SABlock, UniFormer
from tests.helpers import randomize, rel_err

pytestmark = pytest.mark.usefixtures("one_thread")

# tiny depths and widths (the real configs' structure is checked separately, on the meta device)
TINY = dict(depth=(1, 1, 2, 1), embed_dim=(32, 64, 128, 192))



def _build(fn):
    """Build on meta and materialize uninitialized: the models' own init is slow on a busy CPU and
    every value is overwritten anyway."""
    with torch.device("meta"):
        model = fn()
    return model.to_empty(device="cpu")


def _pair(name, **overrides):
    """(fastwin model, literal model) of variant `name` with the same (randomized) weights."""
    cfg = dict(lit.VARIANTS[name], **overrides)
    ref = randomize(_build(lambda: lit.UniFormer(num_classes=10, **cfg)))
    for k, v in ref.state_dict().items():
        if k.endswith("num_batches_tracked"):
            v.zero_()
    model = _build(lambda: fastwin.create_model(name, num_classes=10, **overrides))
    fastwin.load_checkpoint(model, ref.state_dict())
    return model, ref


@pytest.mark.parametrize("name", sorted(lit.VARIANTS))
def test_real_config_state_dict_matches_official(name):
    """Full-size configs: same keys and shapes as the official architecture (built on meta: no memory)."""
    with torch.device("meta"):
        ours = fastwin.create_model(name).state_dict()
        ref = lit.UniFormer(**lit.VARIANTS[name]).state_dict()
    assert list(ours) == list(ref) or sorted(ours) == sorted(ref)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}
    if name == "uniformer_base_ls":
        assert "blocks3.0.gamma_1" in ours and "blocks4.6.gamma_2" in ours
    else:
        assert not any("gamma" in k for k in ours)


@pytest.mark.parametrize("name", ["uniformer_small", "uniformer_small_plus"])
def test_norm_settings_match_official(name):
    """eps/momentum are invisible to random-input comparisons: check them one by one (stem LayerNorm
    1e-5, SABlock LayerNorms 1e-6, BatchNorms torch defaults)."""
    model, ref = _pair(name, **TINY)

    def settings(m):
        return {n: (type(x).__name__, x.eps, getattr(x, "momentum", None)) for n, x in m.named_modules()
                if isinstance(x, (torch.nn.LayerNorm, torch.nn.BatchNorm2d))}

    assert settings(model) == settings(ref)


def test_small_real_config_forward_train_and_eval():
    model, ref = _pair("uniformer_small")
    x = torch.randn(2, 3, 64, 64)
    for mode in ("eval", "train"):
        getattr(model, mode)(), getattr(ref, mode)()
        out, want = model(x), ref(x)
        assert out.shape == (2, 10)
        assert rel_err(out, want) < 1e-5, mode
    # train mode updated the BatchNorm statistics identically
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), k


@pytest.mark.parametrize("name", ["uniformer_small_plus", "uniformer_small_plus_dim64", "uniformer_base",
                                  "uniformer_base_ls"])
def test_variants_tiny_depth_forward(name):
    model, ref = _pair(name, **TINY)
    x = torch.randn(2, 3, 64, 64)
    for mode in ("eval", "train"):
        getattr(model, mode)(), getattr(ref, mode)()
        assert rel_err(model(x), ref(x)) < 1e-5, mode


@pytest.mark.parametrize("name,size", [("uniformer_small", (70, 45)), ("uniformer_small_plus", (37, 50))])
def test_arbitrary_input_size(name, size):
    model, ref = _pair(name, **TINY)
    model.eval(), ref.eval()
    x = torch.randn(1, 3, *size)
    assert rel_err(model(x), ref(x)) < 1e-5


def test_backward_matches_literal():
    model, ref = _pair("uniformer_small", **TINY)
    model.train(), ref.train()
    x = torch.randn(2, 3, 64, 64)
    (model(x) ** 2).sum().backward()
    (ref(x) ** 2).sum().backward()
    grads = dict(ref.named_parameters())
    for k, p in model.named_parameters():
        g = grads[k].grad
        # absolute floor: some gradients are ~0 by symmetry (a bias right before a train-mode BN)
        assert (p.grad - g).abs().max() <= 1e-4 * g.abs().max() + 1e-6, k


def test_features_head_reset_and_checkpointing():
    model, ref = _pair("uniformer_small", **TINY)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, 192, 2, 2)
    pooled = model.forward_head(feats, pre_logits=True)
    assert torch.allclose(pooled, feats.mean((2, 3)), atol=1e-6)
    assert torch.allclose(model.forward_head(feats), model.head(pooled))
    # gradient checkpointing changes memory, not values or gradients
    model.train()
    x.requires_grad_(True)
    y0 = model(x)
    g0 = torch.autograd.grad(y0.sum(), x)[0]
    model.set_grad_checkpointing(True)
    y1 = model(x)
    g1 = torch.autograd.grad(y1.sum(), x)[0]
    assert torch.allclose(y0, y1, atol=1e-6) and torch.allclose(g0, g1, atol=1e-6)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, 192)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, "token")


def test_drop_path_schedule():
    model = fastwin.create_model("uniformer_small", depth=(1, 1, 1, 1), embed_dim=(32, 64, 128, 192),
                                 drop_path_rate=0.3)
    rates = [blk.drop_path.drop_prob if hasattr(blk.drop_path, "drop_prob") else 0.0
             for s in range(1, 5) for blk in getattr(model, f"blocks{s}")]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), model(x))  # no stochastic depth in eval
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, model(x))  # per-sample drops differ between draws


def test_checkpoint_file_round_trip(tmp_path):
    model, ref = _pair("uniformer_base_ls", **TINY)
    path = tmp_path / "uniformer.pth"
    torch.save({"model": ref.state_dict(), "epoch": 3}, path)
    fresh = fastwin.create_model("uniformer_base_ls", num_classes=10, checkpoint=str(path), **TINY).eval()
    ref.eval()
    x = torch.randn(1, 3, 64, 64)
    assert rel_err(fresh(x), ref(x)) < 1e-5
    # legacy files without BatchNorm counters load too
    legacy = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    fastwin.load_checkpoint(fresh, legacy)


@pytest.mark.parametrize("corrupt,key", [
    (lambda sd: sd.pop("blocks1.0.attn.weight"), "blocks1.0.attn.weight"),
    (lambda sd: sd.__setitem__("aux_head.weight", torch.zeros(3)), "aux_head.weight"),
    (lambda sd: sd.__setitem__("blocks3.0.attn.qkv.weight", torch.zeros(3, 3)), "blocks3.0.attn.qkv.weight"),
])
def test_bad_checkpoint_raises_and_leaves_model_unchanged(corrupt, key):
    model, ref = _pair("uniformer_small", **TINY)
    before = copy.deepcopy(model.state_dict())
    sd = randomize(copy.deepcopy(ref), seed=5).state_dict()
    corrupt(sd)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        fastwin.load_checkpoint(model, sd)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("name", ["uniformer_small", "uniformer_base_ls"])
def test_swap_official_blocks_keeps_outputs(name):
    _, ref = _pair(name, **TINY)
    x = torch.randn(2, 3, 64, 64)
    for mode in ("eval", "train"):
        getattr(ref, mode)()
        refc = copy.deepcopy(ref)
        want = refc(x)
        swapped = copy.deepcopy(ref)
        out_model, report = fastwin.swap(swapped)
        assert out_model is swapped
        assert report.counts() == {"uniformer.CBlock": 2, "uniformer.SABlock": 3}, str(report)
        assert all(isinstance(b, CBlock) for b in swapped.blocks1) and isinstance(swapped.blocks4[0], SABlock)
        assert isinstance(swapped.blocks3[0].attn, Attention)
        assert rel_err(swapped(x), want) < 1e-5, mode
        # BN statistics still live in the same modules and were updated the same way in train mode
        assert torch.allclose(swapped.blocks1[0].norm1.running_mean, refc.blocks1[0].norm1.running_mean)


def test_swap_attention_alone_and_refusals():
    attn = lit.Attention(64, 4, qk_scale=0.3)
    randomize(attn)
    holder = torch.nn.Sequential(attn)
    x = torch.randn(2, 9, 64)
    want = attn(x)
    _, report = fastwin.swap(holder)
    assert report.counts() == {"Attention": 1}
    assert holder[0].scale == 0.3
    assert rel_err(holder[0](x), want) < 1e-5
    # an Attention with q/k normalisation computes something else: left alone
    odd = lit.Attention(64, 4)
    odd.q_norm = torch.nn.LayerNorm(16)
    _, report = fastwin.swap(torch.nn.Sequential(odd))
    assert len(report) == 0
    # a CBlock whose local aggregator is not a 5x5 depthwise conv is not the official block
    blk = lit.CBlock(64)
    blk.attn = torch.nn.Conv2d(64, 64, 3, padding=1, groups=64)
    _, report = fastwin.swap(torch.nn.Sequential(blk))
    assert len(report) == 0


def test_bad_inputs():
    model = fastwin.create_model("uniformer_small", **TINY).eval()
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="32"):
        model(torch.randn(1, 3, 16, 64))
    with pytest.raises(TypeError):
        model([[1.0]])
    with pytest.raises(ValueError, match="head_dim"):
        UniFormer(embed_dim=(64, 128, 320, 500))
    with pytest.raises(ValueError, match="4 entries"):
        UniFormer(depth=(1, 1, 1))
