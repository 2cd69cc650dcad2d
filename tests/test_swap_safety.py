"""`fastwin.swap` replaces only what it verified (issue 22 item 3).

Before: the global-attention rule matched timm's `Attention` by class name and structure, so NesT
(`[B, T, N, C]`), VOLO and SAM-ViT (`[B, H, W, C]`) and FastViT (`[B, C, H, W]`) got fastwin attention
and then failed with "x must be [B, N, C]". Now every rule with a forward contract is probed
(`fastwin.swap.core.verify`) and a module that does not keep it is left as it was, with the reason in
`report.left`. The timm sweep (`timm_swap_sweep.py`) runs here on the known offenders, timm's
Swin / Swin V2 / ViT / DeiT and a seeded sample of the rest of `timm.list_models()`; the full sweep
is the script's `__main__`.
"""
import pytest
import torch
import torch.nn as nn

import fastwin
import timm_swap_sweep as sweep
import vit_literal as vlit
from timm_compat import require_timm

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLE = 8  # models drawn (seeded) from the rest of timm.list_models() per CI run: ~1-3 s each


@pytest.fixture(scope="module")
def timm():
    return require_timm()


# ----------------------------------------------------------------------------- the contract probe

def _attention_class(forward):
    """A class named `Attention` with timm's structure (qkv, proj, num_heads, scale) and another forward,
    as the offenders have."""
    return type("Attention", (vlit.Attention,), {"forward": forward})


def _map_forward(self, x):  # [B, H, W, C], as VOLO / SAM-ViT
    B, H, W, C = x.shape
    return vlit.Attention.forward(self, x.reshape(B, H * W, C)).reshape(B, H, W, C)


def _any_rank_forward(self, x):  # [B, N, C] and [B, H, W, C] alike: fastwin's would fail on the second
    return vlit.Attention.forward(self, x.flatten(1, -2)).reshape(x.shape)


def _heads_last_forward(self, x):  # the qkv channels read as (heads, 3, d): another function of the weights
    B, N, C = x.shape
    qkv = self.qkv(x).reshape(B, N, self.num_heads, 3, C // self.num_heads).permute(3, 0, 2, 1, 4)
    out = torch.softmax(qkv[0] @ qkv[1].transpose(-2, -1) * self.scale, -1) @ qkv[2]
    return self.proj(out.transpose(1, 2).reshape(B, N, C))


@pytest.mark.parametrize("forward,why", [
    (_map_forward, "its forward refuses a [2, 5, 32] input"),
    (_any_rank_forward, "its forward also takes a [2, 2, 3, 32] input"),
    (_heads_last_forward, "the replacement computes another function on a [2, 5, 32] input"),
])
def test_structure_alone_is_not_enough(forward, why):
    """Before: all three were swapped (matched by class name and children alone)."""
    torch.manual_seed(0)
    model = nn.Sequential(_attention_class(forward)(32, num_heads=2))
    attn = model[0]
    swapped, report = fastwin.swap(model)
    assert swapped[0] is attn and len(report) == 0
    assert [(path, rule) for path, rule, _ in report.left] == [("0", "Attention")]
    assert report.left[0][2].startswith(why), report.left
    assert "left 1 unverified" in str(report) and why in str(report)


def test_the_plain_attention_is_still_swapped_and_matches():
    torch.manual_seed(0)
    model = nn.Sequential(vlit.Attention(32, num_heads=2)).eval()
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        want = model(x)
        _, report = fastwin.swap(model)
        assert report.counts() == {"Attention": 1} and not report.left
        assert sweep.rel_err([model(x)], [want]) < 1e-5


def test_window_attention_that_takes_maps_is_left():
    """The Swin window-attention rule is verified the same way ([B*nW, N, C] with and without a mask)."""
    import swin_literal as lit

    class WindowAttention(lit.LiteralWindowAttention):
        def forward(self, x, mask=None):  # [B, Wh, Ww, C] windows
            B, h, w, C = x.shape
            return super().forward(x.reshape(B, h * w, C), mask).reshape(B, h, w, C)

    model = nn.Sequential(WindowAttention(32, (4, 4), 2))
    _, report = fastwin.swap(model)
    assert len(report) == 0 and report.left[0][1] == "swin_window_attention", report.left
    good = nn.Sequential(lit.LiteralWindowAttention(32, (4, 4), 2))
    _, report = fastwin.swap(good)
    assert report.counts() == {"swin_window_attention": 1} and not report.left


# --------------------------------------------------------------------------------------- timm

@pytest.mark.parametrize("name", sweep.KNOWN_OFFENDERS)
def test_known_offenders_and_timm_families(timm, name):
    row = sweep.check_model(timm, name)
    assert row["outcome"] in ("swapped", "unswapped"), row
    if name.startswith(("nest", "volo", "fastvit", "samvit")):
        assert row["outcome"] == "unswapped", row
        assert name.startswith("samvit") or any("Attention" in why for why in row["left"]), row
    else:
        assert row["outcome"] == "swapped" and row["rel_err"] < sweep.TOLERANCE, row


def test_sam_vit_global_attention_is_left(timm):
    """SAM-ViT blocks without relative position tables have timm's Attention structure on [B, H, W, C]
    (with them, `samvit_base_patch16` above, the bias parameters keep the structure rule from matching)."""
    torch.manual_seed(0)
    model = timm.create_model("samvit_base_patch16", pretrained=False, img_size=64, use_rel_pos=False,
                              depth=2).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        _, report = fastwin.swap(model)
        assert len(report) == 0 and len(report.left) == 2, str(report)
        assert torch.equal(model(x), want)


@pytest.mark.parametrize("name", sweep.sample(sweep.timm_names(), SAMPLE)[len(sweep.KNOWN_OFFENDERS):])
def test_seeded_sample_of_timm_models(timm, name):
    """Any buildable timm model: unchanged output, or left unswapped (never broken, never moved)."""
    row = sweep.check_model(timm, name, time_limit=20, max_params=30e6)
    assert row["outcome"] in ("swapped", "unswapped", "skipped"), row


def test_probe_compares_tuple_outputs_element_by_element():
    """For rules whose modules return tuples (Hugging Face attention returns `(output, weights)`)."""
    from fastwin.swap.core import Probe

    probe = Probe(nn.Linear(3, 3))
    a = torch.randn(2, 3)
    assert probe.close((a, None), (a.clone(), None)) and probe.close([a], [a + 1e-7])
    assert not probe.close((a, None), (a, a)) and not probe.close((a,), (a, a))
    assert not probe.close((a + 1, None), (a, None))
