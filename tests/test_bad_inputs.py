"""SPEC §7: bad arguments raise ValueError/TypeError naming the argument and shapes, before any kernel."""
import math

import pytest
import torch

import fastwin
from fastwin import ops


def qkv4(B=1, H=8, W=8, heads=2, d=8, dtype=torch.float32):
    return torch.randn(B, H, W, 3 * heads * d, dtype=dtype)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(qkv=torch.randn(8, 8, 48)), ValueError, r"qkv must have 4 dims.*\(8, 8, 48\)"),
    (dict(qkv=torch.randn(1, 8, 8, 50)), ValueError, r"3 \* num_heads = 6.*\(1, 8, 8, 50\)"),
    (dict(num_heads=0), ValueError, "num_heads"),
    (dict(window_size=0), ValueError, "window_size"),
    (dict(window_size=(4, 4, 4)), ValueError, "window_size"),
    (dict(shift_size=4), ValueError, "shift_size must be smaller"),
    (dict(shift_size=-1), ValueError, "shift_size"),
    (dict(rel_pos_bias_table=torch.randn(10, 2)), ValueError,
     r"rel_pos_bias_table must have shape \(49, 2\).*\(10, 2\)"),
    (dict(rel_pos_bias_table=torch.randn(49, 2, dtype=torch.float64)), TypeError, "rel_pos_bias_table has dtype"),
    (dict(qkv_bias=torch.randn(47)), ValueError, r"qkv_bias must have shape \(48,\)"),
    (dict(scale=float("nan")), ValueError, "scale must be finite"),
    (dict(scale=math.inf), ValueError, "scale must be finite"),
    (dict(scale="big"), TypeError, "scale"),
    (dict(pad_order="pad_pad"), ValueError, "pad_order"),
    (dict(dropout_p=1.5), ValueError, "dropout_p"),
    (dict(qkv=torch.randint(0, 3, (1, 8, 8, 48))), TypeError, "qkv must be float"),
    (dict(qkv=[[1.0]]), TypeError, "qkv must be a torch.Tensor"),
])
def test_shifted_window_attention_rejects(kwargs, exc, match):
    args = dict(qkv=qkv4(), num_heads=2, window_size=4, shift_size=2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ops.shifted_window_attention(**args)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(qkv=torch.randn(8, 15, 48)), ValueError, r"15 tokens per window but window_size \(4, 4\) has 16"),
    (dict(mask=torch.zeros(3, 16, 16)), ValueError, r"mask must have shape \[nW, 16, 16\].*\(3, 16, 16\)"),
    (dict(mask=torch.zeros(4, 16, 15)), ValueError, "mask must have shape"),
    (dict(mask=torch.zeros(16, 16)), ValueError, "mask must have 3 dims"),
    (dict(rel_pos_bias_table=torch.randn(49, 3)), ValueError, "rel_pos_bias_table must have shape"),
])
def test_window_attention_rejects(kwargs, exc, match):
    args = dict(qkv=torch.randn(8, 16, 48), num_heads=2, window_size=4)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ops.window_attention(**args)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(x=torch.randn(2, 4, 5)), ValueError, r"x must have 4 dims \[B, C, H, W\]"),
    (dict(weight=torch.randn(5, 1, 3, 3)), ValueError, r"\[4, 1, k, k\].*\(5, 1, 3, 3\)"),
    (dict(weight=torch.randn(4, 1, 4, 4)), ValueError, "kernel size must be odd"),
    (dict(weight=torch.randn(4, 1, 3, 5)), ValueError, "weight must have shape"),
    (dict(bias=torch.randn(3)), ValueError, r"bias must have shape \(4,\)"),
    (dict(layout="NWHC"), ValueError, "layout must be"),
    (dict(weight=torch.randn(4, 1, 3, 3, dtype=torch.float64)), TypeError, "weight has dtype"),
    (dict(residual=1), TypeError, "residual must be a bool"),
])
def test_dwconv_rejects(kwargs, exc, match):
    args = dict(x=torch.randn(2, 4, 6, 6), weight=torch.randn(4, 1, 3, 3), bias=torch.randn(4))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ops.dwconv2d(**args)


def test_attention_rejects_bad_heads():
    with pytest.raises(ValueError, match="divisible by 3 \\* num_heads"):
        ops.attention(torch.randn(2, 10, 40), 3)


def test_window_attention_module_rejects_bad_dim():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        fastwin.WindowAttention(30, 7, 4)


def test_window_attention_module_wrong_channels():
    wa = fastwin.WindowAttention(32, 4, 2)
    # raised before the Linear's own RuntimeError
    with pytest.raises(ValueError, match=r"x must have 32 channels .*\(4, 16, 31\)"):
        wa(torch.randn(4, 16, 31))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for a device mismatch")
def test_device_mismatch_is_type_error():
    with pytest.raises(TypeError, match="is on"):
        ops.shifted_window_attention(qkv4().cuda(), 2, 4, 2, torch.randn(49, 2))


# ------------------------------------------- issue 22.9: the image a model gets, checked at the entry

_FAMILIES = ["swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256", "uniformer_small", "vit_tiny_patch16_224",
             "deit_tiny_distilled_patch16_224", "vit_tiny_r_s16_p8_224"]  # Swin, Swin V2, UniFormer, ViT, DeiT, hybrid


@pytest.fixture(scope="module")
def family_models():
    return {name: fastwin.create_model(name, num_classes=3).eval() for name in _FAMILIES}


@pytest.mark.parametrize("name", _FAMILIES)
@pytest.mark.parametrize("image,exc,match", [
    (lambda: torch.randn(1, 3, 32, 32, dtype=torch.float64), TypeError,
     r"input has dtype torch.float64 but the weights of \w+ are torch.float32"),
    (lambda: torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), TypeError,
     r"input must be a floating-point image for \w+, got dtype torch.uint8"),
    (lambda: torch.zeros(1, 3, 32, 32, dtype=torch.bool), TypeError, "floating-point image.*torch.bool"),
    (lambda: torch.randn(3, 32, 32), ValueError, r"input must be \[B, 3, H, W\], got shape \(3, 32, 32\)"),
    (lambda: torch.randn(1, 1, 32, 32), ValueError, r"input must be \[B, 3, H, W\], got shape \(1, 1, 32, 32\)"),
    (lambda: [[0.0]], TypeError, "input must be a torch.Tensor, got list"),
])
def test_model_entry_refuses_a_wrong_image(family_models, name, image, exc, match):
    """Before: fp64 / uint8 images ended in a raw RuntimeError inside the first convolution (and Swin's
    wrong-rank message named its PatchEmbed, not the model input)."""
    model = family_models[name]
    with torch.no_grad():
        for entry in (model, model.forward_features, model.forward_intermediates):
            with pytest.raises(exc, match=match):
                entry(image())


def test_model_entry_takes_other_dtypes_under_autocast_and_in_a_cast_model(family_models):
    model = family_models["vit_tiny_patch16_224"]
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        for dtype in (torch.float32, torch.bfloat16):
            assert model(torch.randn(1, 3, 32, 32, dtype=dtype)).shape == (1, 3)
        with pytest.raises(TypeError, match="autocast casts float32 inputs only"):
            model(torch.randn(1, 3, 32, 32, dtype=torch.float64))
    twin = fastwin.create_model("vit_tiny_patch16_224", num_classes=3).eval().double()
    with torch.no_grad():
        assert twin(torch.randn(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64
