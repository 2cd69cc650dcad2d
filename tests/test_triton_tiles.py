"""The window-attention tile prunes (window_attention_tiles.py) keep each GPU family's own entries.

No compiling: the prune runs on a stand-in of the launch arguments with the target arch patched, as
kernel_resources.py does. Which builds are spill-free is checked by tests/test_triton_compile.py.
"""
import pytest
import torch

pytest.importorskip("triton")

from fastwin.kernels.triton import window_attention_tiles as tiles  # noqa: E402


def _kept(monkeypatch, arch, np_, d_pad):
    monkeypatch.setattr(tiles, "_target_arch", lambda: arch)
    monkeypatch.setattr(tiles, "interpreting", lambda: False)  # the GPU path, not the interpreter's pick
    args = dict(NP=np_, D_PAD=d_pad, qkv=torch.empty(1, dtype=torch.float32))
    kept = tiles.prune_dq(tiles.DQ_CONFIGS, args)
    return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in kept}


def test_fp32_dq_with_several_key_blocks_keeps_a_pre_hopper_entry_before_hopper(monkeypatch):
    # Swin-B 384 (window 12, NP 256), fp32, head dim 32: triton 3.9's sm_80 build of (16, 64, 4, 1)
    # kept a 24-32 B stack frame, so sm_80 takes (32, 64, 8, 1); sm_90 keeps (16, 64, 4, 1).
    assert _kept(monkeypatch, 90, 256, 32) == {(16, 64, 4, 1)}
    assert _kept(monkeypatch, 80, 256, 32) == {(32, 64, 8, 1)}


def test_fp32_dq_with_one_key_block_is_the_same_on_both_families(monkeypatch):
    # Window 7 (NP 64): the "hopper"/"pre-hopper" marks concern several key blocks only.
    assert _kept(monkeypatch, 80, 64, 32) == _kept(monkeypatch, 90, 64, 32) == {(16, 64, 4, 1), (32, 64, 8, 1)}
