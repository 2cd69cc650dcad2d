"""The reference ops against literal, independently written Swin maths, and fp64 gradchecks."""
import itertools

import pytest
import torch
import torch.nn.functional as F

import fastwin
from fastwin import reference as R


# ---- literal implementations, written the way the official code reads -------------------------
def literal_rel_index(wh, ww):
    idx = torch.empty(wh * ww, wh * ww, dtype=torch.long)
    for i, (yi, xi) in enumerate(itertools.product(range(wh), range(ww))):
        for j, (yj, xj) in enumerate(itertools.product(range(wh), range(ww))):
            idx[i, j] = (yi - yj + wh - 1) * (2 * ww - 1) + (xi - xj + ww - 1)
    return idx


def literal_mask(Hp, Wp, wh, ww, sh, sw):
    img = torch.zeros(Hp, Wp)
    cnt = 0
    for hs in (slice(0, -wh), slice(-wh, -sh), slice(-sh, None)):
        for ws in (slice(0, -ww), slice(-ww, -sw), slice(-sw, None)):
            img[hs, ws] = cnt
            cnt += 1
    wins = []
    for by in range(Hp // wh):
        for bx in range(Wp // ww):
            wins.append(img[by * wh:(by + 1) * wh, bx * ww:(bx + 1) * ww].reshape(-1))
    m = torch.stack(wins)
    diff = m[:, None, :] - m[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


def literal_swin_attention(qkv, heads, wh, ww, sh, sw, table, qkv_bias, scale, order):
    """Roll / pad / loop over windows / explicit softmax / write back / crop / roll back."""
    B, H, W, C3 = qkv.shape
    C = C3 // 3
    d = C // heads
    Hp, Wp = -(-H // wh) * wh, -(-W // ww) * ww
    fill = qkv_bias if qkv_bias is not None else torch.zeros(C3, dtype=qkv.dtype)

    def pad(x):
        out = fill.expand(B, Hp, Wp, C3).clone()
        out[:, : x.shape[1], : x.shape[2]] = x
        return out

    x = pad(torch.roll(qkv, (-sh, -sw), (1, 2))) if order == "roll_pad" else torch.roll(pad(qkv), (-sh, -sw), (1, 2))
    mask = literal_mask(Hp, Wp, wh, ww, sh, sw) if (sh or sw) else None
    index = literal_rel_index(wh, ww)
    out = torch.zeros(B, Hp, Wp, C, dtype=qkv.dtype)
    for b in range(B):
        w_id = 0
        for by in range(Hp // wh):
            for bx in range(Wp // ww):
                win = x[b, by * wh:(by + 1) * wh, bx * ww:(bx + 1) * ww].reshape(wh * ww, 3, heads, d)
                for h in range(heads):
                    q, k, v = win[:, 0, h], win[:, 1, h], win[:, 2, h]
                    logits = (q * scale) @ k.T
                    if table is not None:
                        logits = logits + table[index, h]
                    if mask is not None:
                        logits = logits + mask[w_id]
                    o = logits.softmax(-1) @ v
                    out[b, by * wh:(by + 1) * wh, bx * ww:(bx + 1) * ww, h * d:(h + 1) * d] = o.view(wh, ww, d)
                w_id += 1
    if order == "roll_pad":
        return torch.roll(out[:, :H, :W], (sh, sw), (1, 2))
    return torch.roll(out, (sh, sw), (1, 2))[:, :H, :W]


# ---- tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("wh,ww", [(7, 7), (4, 3), (12, 12), (1, 5)])
def test_relative_position_index(wh, ww):
    assert torch.equal(R.relative_position_index((wh, ww)), literal_rel_index(wh, ww))


@pytest.mark.parametrize("Hp,Wp,w,s", [(14, 14, (7, 7), (3, 3)), (14, 21, (7, 7), (3, 0)), (12, 16, (4, 8), (2, 4)),
                                       (7, 7, (7, 7), (3, 3))])
def test_shift_mask_matches_official_slices(Hp, Wp, w, s):
    assert torch.equal(R.shift_mask(Hp, Wp, w, s), literal_mask(Hp, Wp, *w, *s))


def test_shift_mask_none_without_shift():
    assert R.shift_mask(14, 14, (7, 7), (0, 0)) is None


def test_partition_reverse_roundtrip():
    x = torch.randn(2, 12, 8, 5)
    win = R.window_partition(x, (4, 4))
    assert win.shape == (2 * 3 * 2, 4, 4, 5)
    assert torch.equal(win[1], x[0, 0:4, 4:8])
    assert torch.equal(R.window_reverse(win, (4, 4), 12, 8), x)


CASES = [
    # B, H, W, heads, d, window, shift, order
    (1, 7, 7, 2, 4, (7, 7), (3, 3), "roll_pad"),
    (2, 10, 9, 2, 4, (7, 7), (3, 3), "roll_pad"),
    (2, 10, 9, 2, 4, (7, 7), (3, 3), "pad_roll"),
    (1, 8, 12, 1, 8, (4, 4), (0, 0), "roll_pad"),
    (1, 9, 5, 3, 2, (4, 4), (2, 2), "pad_roll"),
    (1, 6, 11, 1, 4, (3, 5), (1, 2), "roll_pad"),
    (1, 5, 5, 2, 4, (5, 5), (0, 0), "pad_roll"),  # window shrunk to the map
]


@pytest.mark.parametrize("B,H,W,heads,d,window,shift,order", CASES)
def test_shifted_window_attention_matches_literal(B, H, W, heads, d, window, shift, order):
    qkv = torch.randn(B, H, W, 3 * heads * d, dtype=torch.float64)
    table = torch.randn((2 * window[0] - 1) * (2 * window[1] - 1), heads, dtype=torch.float64)
    qkv_bias = torch.randn(3 * heads * d, dtype=torch.float64)
    for bias in (qkv_bias, None):
        got = fastwin.ops.shifted_window_attention(qkv, heads, window, shift, table, bias, pad_order=order)
        want = literal_swin_attention(qkv, heads, *window, *shift, table, bias, d ** -0.5, order)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_pad_orders_differ_when_padded_and_shifted():
    qkv = torch.randn(1, 10, 9, 24, dtype=torch.float64)
    a = R.shifted_window_attention_ref(qkv, None, None, 2, (7, 7), (3, 3), pad_roll=False)
    b = R.shifted_window_attention_ref(qkv, None, None, 2, (7, 7), (3, 3), pad_roll=True)
    assert not torch.allclose(a, b)


def test_window_attention_matches_literal():
    B, nW, heads, d, wh, ww = 2, 3, 2, 4, 3, 3
    N = wh * ww
    qkv = torch.randn(B * nW, N, 3 * heads * d, dtype=torch.float64)
    table = torch.randn((2 * wh - 1) * (2 * ww - 1), heads, dtype=torch.float64)
    mask = torch.where(torch.rand(nW, N, N) > 0.6, -100.0, 0.0).double()
    got = fastwin.ops.window_attention(qkv, heads, (wh, ww), table, mask)
    q, k, v = qkv.view(B * nW, N, 3, heads, d).permute(2, 0, 3, 1, 4)
    attn = (q * d ** -0.5) @ k.transpose(-2, -1) + table[literal_rel_index(wh, ww)].permute(2, 0, 1)
    attn = attn.view(B, nW, heads, N, N) + mask[None, :, None]
    want = (attn.view(B * nW, heads, N, N).softmax(-1) @ v).transpose(1, 2).reshape(B * nW, N, heads * d)
    torch.testing.assert_close(got, want)


def test_attention_matches_literal():
    qkv = torch.randn(2, 11, 3 * 3 * 4, dtype=torch.float64)
    q, k, v = qkv.view(2, 11, 3, 3, 4).permute(2, 0, 3, 1, 4)
    want = ((q * 0.7) @ k.transpose(-2, -1)).softmax(-1) @ v
    torch.testing.assert_close(fastwin.ops.attention(qkv, 3, scale=0.7), want.transpose(1, 2).reshape(2, 11, 12))


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "channels_last"])
def test_dwconv_matches_conv2d(k, layout):
    x = torch.randn(2, 6, 9, 7, dtype=torch.float64)
    w = torch.randn(6, 1, k, k, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    want = F.conv2d(x, w, b, padding=k // 2, groups=6) + x
    if layout == "NHWC":
        got = fastwin.ops.dwconv2d(x.permute(0, 2, 3, 1), w, b, residual=True, layout="NHWC").permute(0, 3, 1, 2)
    else:
        xin = x.to(memory_format=torch.channels_last) if layout == "channels_last" else x
        got = fastwin.ops.dwconv2d(xin, w, b, residual=True)
    torch.testing.assert_close(got, want)


def test_dwconv_layernorm_matches_unfused():
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    w, b = torch.randn(6, 1, 3, 3, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    lw, lb = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    tokens, normed = fastwin.ops.dwconv_layernorm(x, w, b, lw, lb, eps=1e-6)
    y = (x + F.conv2d(x, w, b, padding=1, groups=6)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens, y)
    torch.testing.assert_close(normed, F.layer_norm(y, (6,), lw, lb, 1e-6))


# ---- fp64 gradchecks of every op ------------------------------------------------------------------
def _leaf(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("order", ["roll_pad", "pad_roll"])
def test_gradcheck_shifted_window_attention(order):
    args = (_leaf(1, 5, 6, 12), _leaf(25, 2), _leaf(12))
    assert torch.autograd.gradcheck(
        lambda q, t, b: fastwin.ops.shifted_window_attention(q, 2, 3, 1, t, b, pad_order=order), args)


def test_gradcheck_window_attention():
    mask = torch.where(torch.rand(2, 9, 9) > 0.5, -100.0, 0.0).double()
    args = (_leaf(4, 9, 12), _leaf(25, 2))
    assert torch.autograd.gradcheck(lambda q, t: fastwin.ops.window_attention(q, 2, 3, t, mask), args)


def test_gradcheck_attention():
    assert torch.autograd.gradcheck(lambda q: fastwin.ops.attention(q, 2), (_leaf(2, 7, 12),))


def test_gradcheck_dwconv():
    args = (_leaf(1, 3, 5, 4), _leaf(3, 1, 3, 3), _leaf(3))
    assert torch.autograd.gradcheck(lambda x, w, b: fastwin.ops.dwconv2d(x, w, b, residual=True), args)


def test_gradcheck_dwconv_layernorm():
    args = (_leaf(1, 3, 4, 4), _leaf(3, 1, 3, 3), _leaf(3), _leaf(3), _leaf(3))
    assert torch.autograd.gradcheck(lambda *a: fastwin.ops.dwconv_layernorm(*a), args)
