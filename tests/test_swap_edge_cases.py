"""`fastwin.swap` as a new user meets it (issue #12, items 1-3): a bare block, attention dropout, meta.

The foreign modules are the literal implementations in `tests/swin_literal.py` / `uniformer_literal.py`
(no fastwin imports there).
"""
import copy

import pytest
import swin_literal as lit
import torch
import torch.nn as nn
import uniformer_literal as ulit

import fastwin
from fastwin.layers import SwinTransformerBlock
from fastwin.models.uniformer import SABlock
from fastwin.swap.swin import _SwinBlockHW
from tests.helpers import randomize, rel_err

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=7, num_classes=10)


def _with_attn_drop(model: nn.Module, p: float) -> nn.Module:
    for m in model.modules():
        if isinstance(m, lit.LiteralWindowAttention):
            m.attn_drop = nn.Dropout(p)
    return model


# ------------------------------------------------------------------------------------ 1. a bare block

@pytest.mark.parametrize("kind", ["timm", "official"])
def test_swap_bare_block_returns_the_fused_block_and_swaps_its_attention_in_place(kind):
    if kind == "timm":
        blk, x = lit.TimmBlock(32, (9, 11), 2, 7, 3), torch.randn(2, 9, 11, 32)
    else:
        blk, x = lit.OfficialBlock(32, (14, 14), 2, 7, 3), torch.randn(2, 14 * 14, 32)
    lit._randomize(blk.eval())
    table = blk.attn.relative_position_bias_table
    with torch.no_grad():
        want = blk(x)
    new, report = fastwin.swap(blk)
    assert report.counts() == {"swin_block": 1, "swin_window_attention": 1}, str(report)
    assert report.replaced == [("attn", "swin_window_attention"), ("", "swin_block")]
    assert "use the returned module" in str(report)
    assert type(new) is SwinTransformerBlock and new is not blk
    # the block passed in was changed in place too, and shares everything with the returned one
    assert isinstance(blk.attn, fastwin.WindowAttention) and new.attn is blk.attn and new.norm1 is blk.norm1
    assert new.attn.relative_position_bias_table is table
    with torch.no_grad():
        assert rel_err(new(x), want) < 1e-5
        assert rel_err(blk(x), want) < 1e-5


def test_swap_bare_detection_block():
    blk = lit.DetectionBlock(32, 2, 7, 3).eval()
    lit._randomize(blk)
    H, W = 10, 13
    mask = lit.build_attn_mask(14, 14, 7, 7, 3, 3)
    x = torch.randn(2, H * W, 32)
    blk.H, blk.W = H, W
    with torch.no_grad():
        want = blk(x, mask)
    new, report = fastwin.swap(blk)
    assert report.counts() == {"swin_block": 1, "swin_window_attention": 1}, str(report)
    assert isinstance(new, _SwinBlockHW) and new.pad_order == "pad_roll" and (new.H, new.W) == (H, W)
    with torch.no_grad():
        assert rel_err(new(x, mask), want) < 1e-5
        assert rel_err(blk(x, mask), want) < 1e-5


def test_swap_bare_uniformer_sablock():
    blk = randomize(ulit.SABlock(64, 2, layer_scale=True)).eval()
    x = torch.randn(2, 64, 5, 6)
    with torch.no_grad():
        want = blk(x)
    new, report = fastwin.swap(blk)
    assert report.counts() == {"uniformer.SABlock": 1, "Attention": 1}, str(report)
    assert isinstance(new, SABlock) and new.attn is blk.attn
    with torch.no_grad():
        assert rel_err(new(x), want) < 1e-5
        assert rel_err(blk(x), want) < 1e-5


def test_swap_bare_unverifiable_block_swaps_its_attention_and_returns_it():
    class Rescaled(lit.TimmBlock):
        def forward(self, x):
            return super().forward(x) * 0.5 + x

    blk = Rescaled(32, (9, 11), 2, 7, 3).eval()
    new, report = fastwin.swap(blk)
    assert new is blk and report.replaced == [("attn", "swin_window_attention")]


@pytest.mark.parametrize("make", [lambda: lit.LiteralWindowAttention(32, 7, 2), lambda: ulit.CBlock(16)],
                         ids=["window_attention", "uniformer_cblock"])
def test_swap_bare_module_with_nothing_inside_to_replace_still_says_pass_the_parent(make):
    with pytest.raises(ValueError, match="pass its parent"):
        fastwin.swap(make())


# ------------------------------------------------------------------------- 2. attention dropout > 0

def test_swap_installs_fused_blocks_with_attention_dropout():
    model = _with_attn_drop(lit.TimmSwin(img_size=(36, 44), **TINY), 0.1).eval()
    x = torch.randn(2, 3, 36, 44)
    with torch.no_grad():
        want = model(x)
    model.train()
    frozen = model.layers[0].blocks[0].norm1.eval()  # a user's frozen norm inside a training model
    swapped, report = fastwin.swap(model)
    assert report.counts() == {"swin_block": 4}, str(report)
    blk = swapped.layers[0].blocks[1]
    assert isinstance(blk, SwinTransformerBlock) and blk.attn.attn_drop.p == 0.1
    # every module keeps its mode: the swap's probes ran in eval mode and restored them
    assert all(m.training for m in swapped.modules() if m is not frozen) and not frozen.training
    with torch.no_grad():
        assert rel_err(swapped.eval()(x), want) < 1e-5


# ---------------------------------------------------------------------------------------- 3. meta

def _on_meta(make):
    with torch.device("meta"):
        return make()


@pytest.mark.parametrize("family", ["timm", "official", "detection"])
def test_swap_on_meta_matches_swap_on_cpu(family):
    make = {
        "timm": lambda: lit.TimmSwin(img_size=(36, 44), **TINY),
        "official": lambda: lit.OfficialSwin(img_size=56, **TINY),
        "detection": lambda: lit.DetectionLayer(32, 2, 2, 7),
    }[family]
    torch.manual_seed(0)
    _, want = fastwin.swap(make().eval())
    meta, report = fastwin.swap(_on_meta(make).eval())
    assert report.replaced == want.replaced and report.counts() == {"swin_block": len(report)}, str(report)
    assert all(t.is_meta for t in list(meta.parameters()) + list(meta.buffers()))
    if family == "detection":
        assert all(isinstance(b, _SwinBlockHW) and b.pad_order == "pad_roll" for b in meta.blocks)


def test_swap_on_meta_then_materialize_computes_the_original():
    ref = lit.TimmSwin(img_size=(36, 44), **TINY).eval()
    model, report = fastwin.swap(_on_meta(lambda: lit.TimmSwin(img_size=(36, 44), **TINY)).eval())
    assert report.counts() == {"swin_block": 4}, str(report)
    model = model.to_empty(device="cpu")
    model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 36, 44)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-5


def test_swap_on_meta_global_attention():
    import vit_literal as vlit

    with torch.device("meta"):
        attn = vlit.Attention(32, num_heads=2)
    holder, report = fastwin.swap(nn.Sequential(copy.deepcopy(attn)))
    assert report.counts() == {"Attention": 1} and holder[0].qkv.weight.is_meta


def test_swap_leaves_what_it_shares_as_it_was():
    """Mixed precision (a norm kept in fp64 here) and frozen eval-mode norms survive the swap."""
    model = nn.Sequential(randomize(ulit.SABlock(32, 2)), randomize(ulit.CBlock(32))).train()
    model[0].norm2.double()
    model[1].norm1.eval()
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    swapped, report = fastwin.swap(model)
    assert report.counts() == {"uniformer.SABlock": 1, "uniformer.CBlock": 1}, str(report)
    assert {n: p.dtype for n, p in swapped.named_parameters()} == dtypes
    assert not swapped[1].norm1.training and swapped[0].training and swapped[0].attn.training
