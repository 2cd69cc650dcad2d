"""SPEC §7 for module forwards (issue #12, item 4): a wrong input is a ValueError/TypeError naming `x`
(or `mask`), the module, what it expects and the shape it got — not a RuntimeError from a Linear."""
import pytest
import swin_literal as lit
import torch
import torch.nn as nn
import vit_literal as vlit

import fastwin
from fastwin.layers import Attention, PatchEmbed, PatchMerging, SwinTransformerBlock
from fastwin.models.uniformer import CBlock, SABlock


def _swapped_detection_block():
    layer, _ = fastwin.swap(lit.DetectionLayer(32, 2, 2, 7).eval())
    blk = layer.blocks[1]
    blk.H, blk.W = 4, 5
    return blk


def _swapped_vit_attention():
    holder, _ = fastwin.swap(nn.Sequential(vlit.Attention(32, 2)))
    return holder[0]


def _wa96():
    return fastwin.WindowAttention(96, 7, 3)


def _wa32():
    return fastwin.WindowAttention(32, 4, 2)


def _swin_block():
    return SwinTransformerBlock(32, (7, 9), 2)


def _randn(*shape, **kw):
    return torch.randn(*shape, **kw)


CASES = {  # name: (make module, forward args, exception, message regex)
    # the example, verbatim
    "window_attention": (_wa96, (_randn(4, 49, 64),), ValueError,
                         r"^x must have 96 channels \(last dim, \[B\*nW, N, 96\]\) for WindowAttention\(dim=96\), "
                         r"got shape \(4, 49, 64\)$"),
    "window_attention_rank": (_wa96, (_randn(49, 96),), ValueError,
                              r"x must be \[B\*nW, N, C\] for WindowAttention\(dim=96\), got shape \(49, 96\)"),
    "window_attention_tokens": (_wa96, (_randn(4, 48, 96),), ValueError,
                                r"x must have N = Wh \* Ww = 49 tokens .*window_size=\(7, 7\).*\(4, 48, 96\)"),
    "window_attention_mask": (_wa32, (_randn(8, 16, 32), torch.zeros(3, 16, 16)), ValueError,
                              r"mask must be \[nW, 16, 16\] with nW dividing x.shape\[0\] = 8 .*\(3, 16, 16\)"),
    "window_attention_mask_type": (_wa32, (_randn(8, 16, 32), [[0.0]]), TypeError,
                                   "mask must be a torch.Tensor or None"),
    "window_attention_dtype": (_wa32, (_randn(8, 16, 32, dtype=torch.float64),), TypeError,
                               r"x has dtype torch.float64 but the weights of WindowAttention are torch.float32"),
    "window_attention_type": (_wa32, ([1.0],), TypeError, "x must be a torch.Tensor for WindowAttention"),
    "swin_block": (_swin_block, (_randn(1, 7, 9, 31),), ValueError,
                   r"x must have 32 channels \(last dim, \[B, H, W, 32\]\) for SwinTransformerBlock\(dim=32\), "
                   r"got shape \(1, 7, 9, 31\)"),
    "swin_block_rank": (_swin_block, (_randn(7, 32),), ValueError,
                        r"x must be \[B, H, W, C\] or \[B, L, C\] for SwinTransformerBlock"),
    "patch_merging": (lambda: PatchMerging(None, 8), (_randn(1, 4, 4, 9),), ValueError,
                      r"x must have 8 channels .* for PatchMerging\(dim=8\), got shape \(1, 4, 4, 9\)"),
    "patch_embed": (lambda: PatchEmbed(4, 3, 16), (_randn(1, 4, 8, 8),), ValueError,
                    r"x must have 3 channels \(dim 1, \[B, 3, H, W\]\) for PatchEmbed\(in_chans=3\)"),
    "attention": (lambda: Attention(64, 2), (_randn(2, 10, 32),), ValueError,
                  r"x must have 64 channels \(last dim, \[B, N, 64\]\) for Attention\(dim=64\), "
                  r"got shape \(2, 10, 32\)"),
    "attention_rank": (lambda: Attention(64, 2), (_randn(10, 64),), ValueError,
                       r"x must be \[B, N, C\] for Attention\(dim=64\)"),
    "uniformer_cblock": (lambda: CBlock(64), (_randn(2, 32, 8, 8),), ValueError,
                         r"x must have 64 channels \(dim 1, \[B, 64, H, W\]\) for CBlock\(dim=64\), "
                         r"got shape \(2, 32, 8, 8\)"),
    "uniformer_sablock": (lambda: SABlock(64, 2), (_randn(2, 32, 8, 8),), ValueError,
                          r"x must have 64 channels \(dim 1, \[B, 64, H, W\]\) for SABlock\(dim=64\)"),
    "uniformer_sablock_rank": (lambda: SABlock(64, 2), (_randn(2, 64, 8),), ValueError,
                               r"x must be \[B, C, H, W\] for SABlock\(dim=64\)"),
    "swapped_detection_block": (_swapped_detection_block, (_randn(2, 20, 31),), ValueError,
                                r"x must have 32 channels .* for _SwinBlockHW\(dim=32\)"),
    "swapped_detection_block_tokens": (_swapped_detection_block, (_randn(2, 21, 32),), ValueError,
                                       r"x must have L = H \* W = 4 \* 5 = 20 tokens"),
    "swapped_vit_attention": (_swapped_vit_attention, (_randn(2, 10, 16),), ValueError,
                              r"x must have 32 channels .* for SwappedAttention\(dim=32\)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_module_forward_rejects_bad_input(case):
    make, args, exc, match = CASES[case]
    module = make().eval()
    with pytest.raises(exc, match=match):
        module(*args)


def test_module_checks_let_good_input_through():
    wa = fastwin.WindowAttention(32, 4, 2).eval()
    x, mask = torch.randn(8, 16, 32), torch.zeros(4, 16, 16)
    assert wa(x, mask).shape == x.shape
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: bf16 activations, fp32 weights
        assert Attention(32, 2).eval()(torch.randn(2, 5, 32).bfloat16()).shape == (2, 5, 32)


@pytest.mark.parametrize("name", fastwin.list_models())
def test_every_model_names_its_input_channels(name):
    with torch.device("meta"):  # the check comes before any compute: no memory, no init cost
        model = fastwin.create_model(name)
        with pytest.raises(ValueError, match=r"3.*got shape \(1, 4, 64, 64\)"):
            model(torch.randn(1, 4, 64, 64))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        model([[0.0]])
