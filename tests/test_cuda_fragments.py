"""CPU tests of the integer maps behind the tensor-core CUDA attention kernels (no GPU needed).

tests/cuda_fragments_sim.cpp is built with g++ against csrc/include: it replays the kernels' fragment
helpers (fastwin/mma_frag.h) on a simulator of `ldmatrix` / `mma.m16n8k16` written from the PTX ISA
text, and checks the geometry and launch-plan helpers (fastwin/attention_mma.h). Here the fragment
maps are also compared with a third transcription of the PTX formulas, and the per-kind shift-mask
regions, token sources and padded-token indices with `fastwin.reference.window`.
"""
import json
import os
import shutil
import subprocess

import pytest
import torch

from fastwin.reference import window as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM_SRC = os.path.join(ROOT, "tests", "cuda_fragments_sim.cpp")

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not on PATH")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    exe = str(tmp_path_factory.mktemp("frag") / "sim")
    cmd = ["g++", "-std=c++17", "-O1", "-Wall", "-I", os.path.join(ROOT, "csrc", "include"), SIM_SRC, "-o", exe]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"

    def run(*args):
        out = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=60)
        return out.returncode, out.stdout

    return run


def test_simulated_kernel_products_and_invariants(sim):
    rc, out = sim("sim")
    assert rc == 0 and "FAIL" not in out, out
    for check in ("products", "banks", "quads", "geometry", "rel_pairs", "plan"):
        assert f"ok {check}" in out


def test_fragment_maps_match_ptx_isa(sim):
    """PTX ISA 9.7.14.5.8 (mma.m16n8k16, .f16/.bf16 -> .f32) and 9.7.14.5.15 (ldmatrix .x4)."""
    rc, out = sim("maps")
    assert rc == 0
    maps = json.loads(out)
    a, b, c = [], [], []
    for lane in range(32):
        group, tig = lane >> 2, lane % 4
        for i in range(8):
            a.append([group if (i < 2 or 4 <= i < 6) else group + 8, tig * 2 + (i & 1) + (8 if i >= 4 else 0)])
        for i in range(4):
            b.append([tig * 2 + (i & 1) + (8 if i >= 2 else 0), group])
            c.append([group if i < 2 else group + 8, tig * 2 + (i & 1)])
    assert maps["a"] == a and maps["b"] == b and maps["c"] == c
    # ldmatrix.x4: lanes 8m..8m+7 address matrix m. A operand (and .trans B from [k][n]): matrices
    # (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15); B from [n][k]: (0-7, 0-7),
    # (0-7, 8-15), (8-15, 0-7), (8-15, 8-15).
    order_a = [(0, 0), (8, 0), (0, 8), (8, 8)]
    order_b = [(0, 0), (0, 8), (8, 0), (8, 8)]
    assert maps["ldsm_a"] == [[order_a[l // 8][0] + l % 8, order_a[l // 8][1]] for l in range(32)]
    assert maps["ldsm_b"] == [[order_b[l // 8][0] + l % 8, order_b[l // 8][1]] for l in range(32)]


def _reference_windows(H, W, wh, ww, sh, sw, pad_order, B):
    """Per window (B * nW) and token: source pixel index or -1 (padding), and the official shift
    mask, computed by the reference's own roll / pad / partition."""
    Hp, Wp = -(-H // wh) * wh, -(-W // ww) * ww
    pix = torch.arange(B * H * W, dtype=torch.float64).view(B, H, W, 1) % (H * W)
    marker = torch.tensor([-1.0 - 0.0], dtype=torch.float64)  # padded tokens: 0 + 1 * (-1)
    if pad_order == "roll_pad":
        x = torch.roll(pix, shifts=(-sh, -sw), dims=(1, 2)) if (sh or sw) else pix
        x = ref._pad_with_bias(x, Hp, Wp, marker)
    else:
        x = ref._pad_with_bias(pix, Hp, Wp, marker)
        x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2)) if (sh or sw) else x
    src = ref.window_partition(x, (wh, ww)).reshape(-1, wh * ww).long()  # [B*nW, N]
    mask = ref.shift_mask(Hp, Wp, (wh, ww), (sh, sw))
    return src, mask


GEOMS = [(14, 14, 7, 7, 3, 3), (10, 13, 7, 7, 3, 3), (9, 9, 9, 9, 0, 0), (5, 5, 12, 12, 6, 6), (17, 11, 8, 8, 4, 4),
         (12, 20, 6, 10, 3, 5), (16, 16, 8, 8, 0, 4), (13, 13, 12, 12, 6, 6)]


@pytest.mark.parametrize("pad_order", ["roll_pad", "pad_roll"])
@pytest.mark.parametrize("geom", GEOMS, ids=lambda g: "x".join(map(str, g)))
def test_window_geometry_matches_reference(sim, geom, pad_order):
    H, W, wh, ww, sh, sw = geom
    B = 2
    rc, out = sim("geom", H, W, wh, ww, sh, sw, int(pad_order == "pad_roll"), B)
    assert rc == 0
    got = json.loads(out)
    src_ref, mask_ref = _reference_windows(H, W, wh, ww, sh, sw, pad_order, B)
    nW = src_ref.shape[0] // B
    src = torch.tensor([w["src"] for w in got["windows"]])
    # token_src gives the output row b * H * W + pixel; the reference gives the pixel
    images = torch.arange(B).repeat_interleave(nW)[:, None]
    src = torch.where(src >= 0, src - images * H * W, src)
    assert torch.equal(src, src_ref)
    pad = torch.tensor([w["pad"] for w in got["windows"]])
    assert torch.equal(pad >= 0, src_ref < 0)
    for b in range(B):  # one workspace row per padded token of an image
        idx = pad[b * nW:(b + 1) * nW]
        idx = idx[idx >= 0]
        assert sorted(idx.tolist()) == list(range(got["npad"]))
    # the dense tile of a window's kind reproduces its official shift mask
    region = torch.tensor([w["region"] for w in got["windows"]])[:B * nW]
    mask = torch.where(region[:, :, None] != region[:, None, :], ref.MASK_VALUE, 0.0)
    expect = torch.zeros_like(mask) if mask_ref is None else mask_ref.repeat(B, 1, 1)
    assert torch.equal(mask, expect)
    kinds = {w["kind"] for w in got["windows"]}
    assert len(kinds) <= got["kinds"] <= 4
