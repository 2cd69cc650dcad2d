"""Swin V2: the cosine-attention reference against literal V2 maths, the fused backends against the
reference (fwd + bwd, SPEC §6 rule), the model against timm's `swinv2_*` on timm's weights, checkpoint
layouts, and `swap()` on timm's Swin V2.

The fused-backend tests (`test_fused_*`) need fastwin's ops to route `logit_scale` to the backend.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from timm_compat import require_timm

import fastwin
from fastwin.layers.swin_v2_block import PatchMergingV2, SwinTransformerV2Block, WindowAttentionV2, log_spaced_coords
from fastwin.models.swin_v2 import SwinTransformerV2
from fastwin.reference import shifted_window_attention_ref, window_attention_ref
from tests.helpers import FAST, randomize, rel_err

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=8)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# whole models: not through Triton's CPU interpreter (minutes); ops tests cover it there
MODEL_BACKENDS = [name for name in FAST if not (name == "triton" and DEVICE == "cpu")]


# ------------------------------------------------------------------------------ literal V2 attention

def literal_v2_windows(qkv, heads, wh, ww, table, mask, logit_scale):
    """timm's formula, window by window and head by head:
    softmax((normalize(q) @ normalize(k)^T) * logit_scale[h] + table[index, h] (+ mask)) @ v."""
    B_, N, C3 = qkv.shape
    d = C3 // (3 * heads)
    ys, xs = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    index = (ys[:, None] - ys[None, :] + wh - 1) * (2 * ww - 1) + (xs[:, None] - xs[None, :] + ww - 1)
    out = torch.empty(B_, N, heads * d, dtype=qkv.dtype)
    for b in range(B_):
        win = qkv[b].view(N, 3, heads, d)
        for h in range(heads):
            q, k, v = win[:, 0, h], win[:, 1, h], win[:, 2, h]
            logits = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T) * logit_scale[h]
            if table is not None:
                logits = logits + table[index, h]
            if mask is not None:
                logits = logits + mask[b % mask.shape[0]]
            out[b, :, h * d:(h + 1) * d] = logits.softmax(-1) @ v
    return out


def literal_v2_shifted(qkv, heads, window, shift, table, qkv_bias, logit_scale, order):
    """Roll / pad with the qkv bias (either order), partition, literal V2 windows, reverse, crop, roll back."""
    B, H, W, C3 = qkv.shape
    (wh, ww), (sh, sw) = window, shift
    Hp, Wp = -(-H // wh) * wh, -(-W // ww) * ww
    fill = qkv_bias if qkv_bias is not None else torch.zeros(C3, dtype=qkv.dtype)

    def pad(x):
        out = fill.expand(B, Hp, Wp, C3).clone()
        out[:, :H, :W] = x
        return out

    x = pad(torch.roll(qkv, (-sh, -sw), (1, 2))) if order == "roll_pad" else torch.roll(pad(qkv), (-sh, -sw), (1, 2))
    wins = x.view(B, Hp // wh, wh, Wp // ww, ww, C3).permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, C3)
    mask = fastwin.ops.shift_mask(Hp, Wp, window, shift, dtype=qkv.dtype)
    out = literal_v2_windows(wins, heads, wh, ww, table, mask, logit_scale)
    out = out.view(B, Hp // wh, Wp // ww, wh, ww, -1).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    if order == "roll_pad":
        return torch.roll(out[:, :H, :W], (sh, sw), (1, 2))
    return torch.roll(out, (sh, sw), (1, 2))[:, :H, :W]


def _v2_inputs(B, H, W, heads, d, window, dtype=torch.float64, device="cpu"):
    C3 = 3 * heads * d
    qkv = torch.randn(B, H, W, C3, dtype=dtype, device=device)
    n_rel = (2 * window[0] - 1) * (2 * window[1] - 1)
    table = 16 * torch.sigmoid(torch.randn(n_rel, heads, dtype=dtype, device=device))
    qkv_bias = torch.randn(C3, dtype=dtype, device=device)
    logit_scale = torch.exp(torch.rand(heads, dtype=dtype, device=device) * math.log(100.0))  # in [1, 100]
    return qkv, table, qkv_bias, logit_scale


# ------------------------------------------------------------------------------ reference ops

@pytest.mark.parametrize("order", ["roll_pad", "pad_roll"])
@pytest.mark.parametrize("H,W,window,shift", [(8, 8, (4, 4), (0, 0)), (8, 8, (4, 4), (2, 2)), (7, 10, (4, 3), (2, 1))])
def test_reference_shifted_cosine_matches_literal(H, W, window, shift, order):
    qkv, table, qkv_bias, ls = _v2_inputs(2, H, W, 2, 8, window)
    got = shifted_window_attention_ref(qkv, table, qkv_bias, 2, window, shift, 0.123, order == "pad_roll", 0.0, ls)  # scale unused
    want = literal_v2_shifted(qkv, 2, window, shift, table, qkv_bias, ls, order)
    torch.testing.assert_close(got, want)


def test_reference_window_cosine_matches_literal():
    qkv = torch.randn(6, 12, 3 * 2 * 8, dtype=torch.float64)
    table = torch.randn(5 * 7, 2, dtype=torch.float64)
    mask = torch.where(torch.rand(3, 12, 12) > 0.6, -100.0, 0.0).double()
    ls = torch.tensor([2.0, 37.0], dtype=torch.float64)
    got = window_attention_ref(qkv, table, mask, 2, (3, 4), None, 0.0, ls)
    torch.testing.assert_close(got, literal_v2_windows(qkv, 2, 3, 4, table, mask, ls))


def test_gradcheck_cosine_ops():
    """fp64 gradients of every input through the public ops (qkv, table, qkv bias, logit scale)."""
    leaves = [t.requires_grad_() for t in _v2_inputs(1, 4, 5, 2, 2, (3, 3))]  # padded to 6x6, shifted
    with fastwin.set_backend("reference"):
        assert torch.autograd.gradcheck(
            lambda q, t, b, s: fastwin.ops.shifted_window_attention(q, 2, 3, 1, t, b, logit_scale=s), leaves)
        mask = torch.where(torch.rand(2, 9, 9) > 0.5, -100.0, 0.0).double()
        win = [torch.randn(2, 9, 12, dtype=torch.float64, requires_grad=True), leaves[1], leaves[3]]
        assert torch.autograd.gradcheck(
            lambda q, t, s: fastwin.ops.window_attention(q, 2, 3, t, mask, logit_scale=s), win)


def test_log_spaced_coords_match_timm_formula():
    for window, pretrained in [((8, 8), (0, 0)), ((16, 12), (12, 12)), ((1, 5), (0, 0))]:
        t = log_spaced_coords(window, pretrained)
        assert t.shape == (1, 2 * window[0] - 1, 2 * window[1] - 1, 2)
        ref = pretrained if pretrained[0] > 0 else window
        dy = torch.arange(-(window[0] - 1), window[0]).float() / max(ref[0] - 1, 1) * 8
        want = torch.sign(dy) * torch.log2(dy.abs() + 1) / 3
        torch.testing.assert_close(t[0, :, 0, 0], want)
        if pretrained[0] == 0:  # offsets scaled to [-8, 8]
            assert t.abs().max() <= math.log2(9) / 3 + 1e-6


# ------------------------------------------------------------------------------ fused backends

# Op-level parity of the fused backends (cosine cases with logit scales up to 100) is in the shared
# conformance table, tests/test_conformance.py; here: a whole model.


@pytest.mark.parametrize("backend", MODEL_BACKENDS)
def test_fused_v2_model_matches_reference(backend):
    """A tiny Swin V2 (shifted, padded windows, shrunk last stage) fwd + bwd on the backend."""
    torch.manual_seed(0)
    model = fastwin.create_model("swinv2_tiny_window8_256", img_size=(72, 88), num_classes=5, **TINY).to(DEVICE)
    randomize(model, bias_std=0.3)
    x = torch.randn(2, 3, 72, 88, device=DEVICE)
    runs = {}
    for name in ("reference", backend):
        model.zero_grad()
        with fastwin.set_backend(name, strict=True):
            out = model(x)
        out.square().mean().backward()
        runs[name] = (out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    assert rel_err(runs[backend][0], runs["reference"][0]) < 1e-4
    for n, g in runs["reference"][1].items():
        assert rel_err(runs[backend][1][n], g) < 1e-3, n


# ------------------------------------------------------------------------------ modules

def test_patch_merging_v2_order_and_norm():
    m = PatchMergingV2(3)
    x = torch.randn(2, 5, 6, 3)
    xp = F.pad(x, (0, 0, 0, 0, 0, 1))
    cat = torch.cat([xp[:, 0::2, 0::2], xp[:, 1::2, 0::2], xp[:, 0::2, 1::2], xp[:, 1::2, 1::2]], -1)
    torch.testing.assert_close(m(x), m.norm(m.reduction(cat)))


def test_window_attention_v2_module_forward_backward():
    with fastwin.set_backend("reference"):
        attn = WindowAttentionV2(16, (4, 4), 2)
        randomize(attn, bias_std=0.3)
        x = torch.randn(6, 16, 16, requires_grad=True)
        mask = fastwin.ops.shift_mask(8, 4, (4, 4), (2, 2))  # 2 windows
        out = attn(x, mask)
        qkv = F.linear(x, attn.qkv.weight, torch.cat([attn.q_bias, torch.zeros(16), attn.v_bias]))
        table = 16 * torch.sigmoid(attn.cpb_mlp(attn.relative_coords_table).view(-1, 2))
        ls = attn.logit_scale.clamp(max=math.log(100)).exp().flatten()
        want = attn.proj(literal_v2_windows(qkv, 2, 4, 4, table, mask, ls))
        torch.testing.assert_close(out, want)
        out.sum().backward()
        assert all(p.grad is not None for p in attn.parameters())


def test_block_accepts_tokens_and_validates():
    blk = SwinTransformerV2Block(16, (8, 8), 2, window_size=4, shift_size=2)
    x = torch.randn(2, 8, 8, 16)
    torch.testing.assert_close(blk(x.flatten(1, 2)), blk(x).flatten(1, 2))
    with pytest.raises(ValueError, match="16 channels"):
        blk(torch.randn(2, 8, 8, 15))
    with pytest.raises(ValueError, match="tokens"):
        blk(torch.randn(2, 60, 16))


def test_model_surface():
    model = fastwin.create_model("swinv2_tiny_window8_256", num_classes=7, **TINY)
    assert model.pretrained_cfg["input_size"] == (3, 256, 256) and model.pretrained_cfg["classifier"] == "head.fc"
    assert model.get_classifier() is model.head.fc
    nwd = model.no_weight_decay()
    assert nwd and all("cpb_mlp" in n or "logit_scale" in n for n in nwd)
    assert {n for n, _ in model.named_parameters()} >= nwd
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert model(x).shape == (1, 7)
        maps = model.forward_intermediates(x, intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [(1, 16, 16, 24), (1, 32, 8, 12), (1, 64, 4, 6), (1, 128, 2, 3)]
    model.reset_classifier(0)
    assert model(x).shape == (1, 128)


# ------------------------------------------------------------------------------ against timm

def _timm_v2(timm, img_size, strict=True, **kw):
    ref = timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=img_size, num_classes=5,
                            strict_img_size=strict, **{**TINY, **kw})
    return randomize(ref, bias_std=0.3).eval()


@pytest.mark.parametrize("img_size,strict", [(256, True), ((200, 136), False), ((72, 88), False)])
def test_matches_timm_with_timm_weights(img_size, strict):
    timm = require_timm()
    ref = _timm_v2(timm, img_size, strict)
    model = fastwin.create_model("swinv2_tiny_window8_256", img_size=img_size, num_classes=5,
                                 checkpoint=ref.state_dict(), **TINY).eval()
    size = (img_size, img_size) if isinstance(img_size, int) else img_size
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        want = ref(x)
        for backend in ["reference"] + MODEL_BACKENDS:
            with fastwin.set_backend(backend):
                assert rel_err(model(x), want) < 1e-5, backend
        got = model.forward_intermediates(x, norm=True)
        exp = ref.forward_intermediates(x, norm=True)
    assert rel_err(got[0], exp[0]) < 1e-5
    assert all(rel_err(a, b) < 1e-5 for a, b in zip(got[1], exp[1]))


def test_matches_timm_with_pretrained_window_sizes():
    """The 12to16-style models: CPB coordinates normalized by the pretraining window."""
    timm = require_timm()
    ref = _timm_v2(timm, 128, pretrained_window_sizes=(6, 6, 6, 3), window_size=8)
    model = fastwin.create_model("swinv2_tiny_window8_256", img_size=128, num_classes=5,
                                 pretrained_window_sizes=(6, 6, 6, 3), checkpoint=ref.state_dict(), **TINY).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-5


def test_official_layout_checkpoint_loads():
    """microsoft/Swin-Transformer V2 layout: merging at the end of stages, classifier `head`, derived buffers."""
    timm = require_timm()
    ref = _timm_v2(timm, 128)
    official = {}
    for k, v in ref.state_dict().items():
        parts = k.split(".")
        if len(parts) > 2 and parts[0] == "layers" and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) - 1)
        k = ".".join(parts).replace("head.fc.", "head.")
        official[k] = v
    official["layers.0.blocks.1.attn_mask"] = torch.zeros(1)
    official["layers.0.blocks.0.attn.relative_coords_table"] = torch.zeros(1)
    model = fastwin.create_model("swinv2_tiny_window8_256", img_size=128, num_classes=5, checkpoint=official,
                                 **TINY).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-5
    with pytest.raises(ValueError, match="missing keys"):
        fastwin.load_checkpoint(model, {k: v for k, v in ref.state_dict().items() if "cpb_mlp.2" not in k})


@pytest.mark.parametrize("img_size,strict", [(256, True), ((72, 88), False)])
def test_swap_timm_v2_keeps_outputs(img_size, strict):
    timm = require_timm()
    ref = _timm_v2(timm, img_size, strict)
    size = (img_size, img_size) if isinstance(img_size, int) else img_size
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        want = ref(x)
    params = {id(p) for p in ref.parameters()}
    model, report = fastwin.swap(ref)
    assert report.counts().get("swin_v2_block") == sum(TINY["depths"]), str(report)
    assert all(isinstance(b, SwinTransformerV2Block) for layer in model.layers for b in layer.blocks)
    assert {id(p) for p in model.parameters()} == params  # shared, not copied: optimizers stay valid
    with torch.no_grad():
        for backend in ["reference"] + MODEL_BACKENDS:
            with fastwin.set_backend(backend):
                assert rel_err(model(x), want) < 1e-5, backend
    model.train()
    model(x).sum().backward()
    assert model.layers[0].blocks[0].attn.cpb_mlp[0].weight.grad is not None


def test_swap_timm_v2_attention_alone():
    timm = require_timm()
    ref = _timm_v2(timm, 64)
    attn = ref.layers[0].blocks[1].attn  # window 8 on a 16x16 map
    holder = torch.nn.Sequential(copy.deepcopy(attn))
    x = torch.randn(8, 64, 16)
    mask = fastwin.ops.shift_mask(16, 16, (8, 8), (4, 4))
    with torch.no_grad():
        want = holder[0](x, mask)
    _, report = fastwin.swap(holder)
    assert report.counts() == {"swin_v2_window_attention": 1}, str(report)
    assert isinstance(holder[0], WindowAttentionV2)
    with torch.no_grad():
        assert rel_err(holder[0](x, mask), want) < 1e-5


def test_swap_leaves_fastwin_v2_and_v1_alone():
    model = fastwin.create_model("swinv2_tiny_window8_256", **TINY)
    assert len(fastwin.swap(model)[1]) == 0
    assert isinstance(model, SwinTransformerV2)
