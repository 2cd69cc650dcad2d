"""Unusual geometry on every available fast backend: maps smaller than the window or the shift,
1-pixel maps, rectangular windows. Each must match the reference (and never read out of bounds)."""
import pytest
import torch

import fastwin
from fastwin.reference import shifted_window_attention_ref
from tests.tolerance import assert_within_rule

FAST = [n for n in ("triton", "cpp", "cuda") if fastwin.backends()[n]]
DEVICE = {"triton": "cuda" if torch.cuda.is_available() else "cpu", "cpp": "cpu", "cuda": "cuda"}

GEOMETRY = [  # H, W, window, shift, order
    (5, 5, (12, 12), (6, 6), "roll_pad"),   # shift larger than the map
    (5, 5, (12, 12), (6, 6), "pad_roll"),
    (3, 7, (8, 8), (4, 4), "roll_pad"),
    (1, 1, (7, 7), (3, 3), "roll_pad"),     # one pixel
    (1, 9, (4, 4), (2, 2), "pad_roll"),
    (6, 10, (3, 5), (1, 2), "roll_pad"),    # rectangular window
    (9, 9, (7, 7), (0, 0), "pad_roll"),
]


@pytest.mark.parametrize("backend", FAST or [pytest.param("none", marks=pytest.mark.skip("no fast backend here"))])
@pytest.mark.parametrize("H,W,window,shift,order", GEOMETRY)
def test_shifted_window_geometry(backend, H, W, window, shift, order):
    device, heads, d = DEVICE[backend], 2, 16
    qkv = torch.randn(2, H, W, 3 * heads * d, device=device, requires_grad=True)
    table = torch.randn((2 * window[0] - 1) * (2 * window[1] - 1), heads, device=device, requires_grad=True)
    bias = torch.randn(3 * heads * d, device=device, requires_grad=True)
    with fastwin.set_backend(backend, strict=True):
        out = fastwin.ops.shifted_window_attention(qkv, heads, window, shift, table, bias, pad_order=order)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (qkv, table, bias), grad)
    exact_in = [t.detach().double().requires_grad_() for t in (qkv, table, bias)]
    exact = shifted_window_attention_ref(exact_in[0], heads, window, shift, exact_in[1], exact_in[2], pad_order=order)
    want = torch.autograd.grad(exact, exact_in, grad.double(), allow_unused=True)  # no padding: no bias grad
    low_in = [t.detach().clone().requires_grad_() for t in (qkv, table, bias)]
    low = shifted_window_attention_ref(low_in[0], heads, window, shift, low_in[1], low_in[2], pad_order=order)
    low_g = torch.autograd.grad(low, low_in, grad, allow_unused=True)
    assert_within_rule(out, low, exact, "output")
    for name, g, lg, w, x in zip(("qkv", "table", "qkv_bias"), got, low_g, want, low_in):
        lg = torch.zeros_like(x) if lg is None else lg
        w = torch.zeros_like(x, dtype=torch.float64) if w is None else w
        assert_within_rule(g, lg, w, f"grad {name}")
