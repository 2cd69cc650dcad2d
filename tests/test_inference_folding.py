"""UniFormer's inference-only CBlock form (BatchNorm folded into the next 1x1 conv, channels-last maps,
oneDNN GEMMs; fastwin/layers/folding.py) against the plain module arithmetic: the output, every way a
folded source can change (BatchNorm statistics in a training forward, in-place updates,
load_state_dict, `.data` swaps, a new Parameter), and every case that must keep the unfolded form
(training, autograd, hooks, the reference backend, fx tracing, BatchNorm without running statistics)."""
import pytest
import torch
import torch.nn as nn

import fastwin
from fastwin import testing
from fastwin.layers import folding
from fastwin.models.uniformer import CBlock, PatchEmbed, SABlock

pytestmark = pytest.mark.skipif(not (fastwin.backends()["cpp"] and torch.backends.mkldnn.is_available()),
                                reason="needs the cpp backend and torch's oneDNN")


def _block(seed: int, dim: int = 16) -> CBlock:
    torch.manual_seed(seed)
    blk = CBlock(dim, mlp_ratio=2.0)
    _randomize(blk)
    return blk.eval()


def _randomize(blk: nn.Module) -> None:
    with torch.no_grad():  # BatchNorms far from identity, so a stale or missing fold shows
        for m in blk.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.3)
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.3, 2.0)
            elif isinstance(m, nn.Conv2d):
                m.bias.normal_(0, 0.2)


def _unfolded(blk: CBlock, x: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    """The plain module arithmetic (the reference backend's path) in `dtype`."""
    import copy

    ref = copy.deepcopy(blk).to(dtype)
    with torch.no_grad(), fastwin.set_backend("reference"):
        return ref(x.to(dtype))


def _folded_ran(blk: CBlock) -> bool:
    return all(c in folding._cache for c in (blk.pos_embed, blk.conv1, blk.conv2, blk.mlp.fc1, blk.mlp.fc2))


def _check(blk: CBlock, x: torch.Tensor, mode=torch.inference_mode) -> torch.Tensor:
    with mode(), fastwin.set_backend("cpp", strict=True):
        got = blk(x)
    exact, low = _unfolded(blk, x), _unfolded(blk, x, torch.float32)
    err, b = testing.max_err(got, exact), testing.bound(low, exact, torch.float32)
    assert err <= b, f"max error {err:.3e} > bound {b:.3e}"
    return got


@pytest.mark.parametrize("mode", [torch.inference_mode, torch.no_grad])
@pytest.mark.parametrize("memory", ["contiguous", "channels_last"])
def test_folded_block_matches_the_module_arithmetic(mode, memory):
    blk = _block(1)
    x = torch.randn(2, 16, 9, 11)
    if memory == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    got = _check(blk, x, mode)
    assert _folded_ran(blk), "the folded form did not run"
    assert got.shape == x.shape and got.is_contiguous(memory_format=torch.channels_last)


def _refolds_after(change) -> None:
    blk = _block(2)
    x = torch.randn(2, 16, 8, 8)
    _check(blk, x)
    assert _folded_ran(blk)
    change(blk)
    _check(blk, x)


def test_refolds_after_in_place_updates_of_every_source():
    def update(blk):
        with torch.no_grad():
            blk.pos_embed.weight.mul_(-2.0)  # folded with the identity (x + dwconv(x))
            blk.pos_embed.bias.add_(0.5)
            blk.attn.weight.mul_(1.5)  # packed as it is
            blk.norm1.running_var.mul_(3.0)
            blk.norm2.running_mean.add_(0.7)
            blk.norm2.weight.mul_(-1.0)
            blk.conv1.weight.mul_(2.0)
            blk.conv2.bias.add_(1.0)
            blk.mlp.fc2.weight.mul_(0.5)
    _refolds_after(update)


def test_refolds_after_load_state_dict_data_swap_and_new_parameter():
    def load(blk):
        blk.load_state_dict(_block(3).state_dict())  # same tensor objects, new values in place
        blk.norm1.running_mean.data = torch.randn(16)  # a new storage behind the same buffer
        blk.pos_embed.weight.data = torch.randn_like(blk.pos_embed.weight)
        blk.mlp.fc1.bias = nn.Parameter(torch.randn(blk.mlp.fc1.out_channels))  # another tensor object
        blk.norm2.eps = 0.3
    _refolds_after(load)


def _train_step(blk: nn.Module, x: torch.Tensor, lr: float) -> None:
    """One SGD step in training mode on the cpp backend (BatchNorms update their running statistics), then eval."""
    blk.train()
    opt = torch.optim.SGD(blk.parameters(), lr=lr)
    with fastwin.set_backend("cpp"):
        blk(x).square().mean().backward()
    opt.step()
    blk.eval()


def test_refolds_after_a_training_forward_updates_the_running_statistics():
    _refolds_after(lambda blk: _train_step(blk, torch.randn(4, 16, 8, 8), 0.1))


def test_training_and_autograd_keep_the_module_arithmetic():
    blk = _block(4)
    x = torch.randn(2, 16, 8, 8)
    with fastwin.set_backend("cpp"):
        out = blk(x)  # eval mode, parameters require grad: the BatchNorm parameters must get gradients
    assert not _folded_ran(blk)
    out.square().sum().backward()
    ref = _block(4).double()
    with fastwin.set_backend("reference"):
        ref(x.double()).square().sum().backward()
    for (name, p), q in zip(blk.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad.double(), q.grad, rtol=1e-4, atol=1e-4), name
    blk.train()
    with torch.no_grad(), fastwin.set_backend("cpp"):
        blk(x)  # training mode: batch statistics, nothing folded
    assert not _folded_ran(blk)


@pytest.mark.parametrize("why", ["hook", "reference backend", "no running stats", "train-mode BatchNorm"])
def test_keeps_the_module_arithmetic_where_folding_would_change_what_runs(why):
    blk = _block(5)
    x = torch.randn(2, 16, 8, 8)
    seen = []
    backend = "reference" if why == "reference backend" else "cpp"
    if why == "hook":
        blk.norm1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    elif why == "no running stats":
        blk.norm2 = nn.BatchNorm2d(16, track_running_stats=False)  # batch statistics even in eval mode
    elif why == "train-mode BatchNorm":
        blk.norm1.train()
    with torch.inference_mode(), fastwin.set_backend(backend):
        got = blk(x)
    assert not _folded_ran(blk)
    if why == "hook":
        assert seen == [x.shape]
    exact = _unfolded(blk, x)
    assert torch.allclose(got.double(), exact, rtol=1e-4, atol=1e-4)


def test_fx_trace_keeps_the_batchnorm_modules():
    blk = _block(6)
    gm = torch.fx.symbolic_trace(blk)
    assert {"norm1", "norm2"} <= {n.target for n in gm.graph.nodes if n.op == "call_module"}
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(gm(x).double(), _unfolded(blk, x), rtol=1e-4, atol=1e-4)


def test_patch_embed_hands_the_blocks_channels_last_maps_only_in_the_folded_form():
    pe = PatchEmbed(2, 8, 16).eval()
    x = torch.randn(2, 8, 12, 12)
    with torch.inference_mode(), fastwin.set_backend("cpp"):
        fast = pe(x)
    with torch.inference_mode(), fastwin.set_backend("reference"):
        plain = pe(x)
    assert fast.is_contiguous(memory_format=torch.channels_last) and plain.is_contiguous()
    assert torch.allclose(fast, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [(12, 12), (13, 11)])
def test_patch_embed_gemm_on_channels_last_maps_matches_the_conv_and_follows_weight_updates(size):
    pe = PatchEmbed(2, 128, 16).eval()  # 128: the channels from which the GEMM form runs
    with torch.no_grad():
        pe.proj.bias.normal_()
    x = torch.randn(2, 128, *size).contiguous(memory_format=torch.channels_last)
    for step in range(2):
        with torch.inference_mode(), fastwin.set_backend("cpp"):
            fast = pe(x)
        assert pe.proj in folding._cache, "the gather + GEMM form did not run"
        exact = _unfolded(pe, x)
        assert fast.shape == exact.shape == (2, 16, size[0] // 2, size[1] // 2)
        assert torch.allclose(fast.double(), exact, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            pe.proj.weight.mul_(-2.0)  # the next call must use the new weight


# ----------------------------------------------------------------------------------------------- SABlock


def _sablock(seed: int, dim: int = 32, **kwargs) -> SABlock:
    torch.manual_seed(seed)
    blk = SABlock(dim, num_heads=2, mlp_ratio=2.0, **dict(dict(qkv_bias=True), **kwargs))
    with torch.no_grad():  # LayerNorms far from identity, biases non-zero
        for m in (blk.norm1, blk.norm2):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.3)
        for m in (blk.pos_embed, blk.attn.qkv, blk.attn.proj, blk.mlp.fc1, blk.mlp.fc2):
            if m.bias is not None:
                m.bias.normal_(0, 0.2)
    return blk.eval()


def _sablock_form_ran(blk: SABlock, x: torch.Tensor, mode=torch.inference_mode) -> bool:
    """Whether `blk(x)` took the inference-only form (which runs no `dwconv_layernorm` op, the plain
    path's first), after checking its output."""
    with mode(), fastwin.set_backend("cpp", strict=True), fastwin.dispatch.record() as ran:
        got = blk(x)
    exact, low = _unfolded(blk, x), _unfolded(blk, x, torch.float32)
    err, b = testing.max_err(got, exact), testing.bound(low, exact, torch.float32)
    assert err <= b, f"max error {err:.3e} > bound {b:.3e}"
    assert got.shape == x.shape
    return _form_ran(ran)


def _form_ran(ran) -> bool:
    return bool(ran) and not any(op == "dwconv_layernorm" for op, _ in ran)


@pytest.mark.parametrize("mode", [torch.inference_mode, torch.no_grad])
@pytest.mark.parametrize("memory", ["contiguous", "channels_last"])
def test_sablock_inference_form_matches_the_module_arithmetic(mode, memory):
    blk = _sablock(11, qkv_bias=memory == "contiguous")  # with and without a qkv bias
    x = torch.randn(2, 32, 5, 7)
    if memory == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    assert _sablock_form_ran(blk, x, mode), "the inference form did not run"
    with mode(), fastwin.set_backend("cpp"):
        assert blk(x).is_contiguous(memory_format=torch.channels_last)  # the next block reads it without a copy


def test_sablock_inference_form_follows_in_place_updates_load_state_dict_and_training():
    blk = _sablock(12)
    x = torch.randn(2, 32, 4, 4)
    assert _sablock_form_ran(blk, x)
    with torch.no_grad():  # every packed or folded source, in place
        blk.pos_embed.weight.mul_(-2.0)
        blk.attn.qkv.weight.mul_(0.5)
        blk.attn.proj.bias.add_(1.0)
        blk.norm1.weight.mul_(2.0)
        blk.mlp.fc1.weight.add_(0.1)
        blk.mlp.fc2.weight.mul_(-1.0)
    assert _sablock_form_ran(blk, x)
    blk.load_state_dict(_sablock(13).state_dict())  # same tensor objects, new values
    assert _sablock_form_ran(blk, x)
    _train_step(blk, torch.randn(2, 32, 4, 4), 0.5)
    assert _sablock_form_ran(blk, x)


@pytest.mark.parametrize("why", ["hook", "layer scale", "training", "grad", "reference backend", "pinned attention"])
def test_sablock_keeps_the_module_arithmetic_where_the_form_would_change_what_runs(why):
    blk = _sablock(14, layer_scale=0.5 if why == "layer scale" else None)
    x = torch.randn(2, 32, 4, 4)
    seen = []
    if why == "hook":
        blk.norm2.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    if why == "training":
        blk.train()
    if why == "pinned attention":
        blk.attn.backend = "reference"  # Attention(backend=...): its ops on that backend
    backend = "reference" if why == "reference backend" else "cpp"
    mode = torch.enable_grad if why == "grad" else torch.no_grad
    with mode(), fastwin.set_backend(backend), fastwin.dispatch.record() as ran:
        got = blk(x)
    assert not _form_ran(ran), ran
    if why == "hook":
        assert seen == [(2, 16, 32)]
    if why == "grad":
        got.square().sum().backward()
        assert blk.attn.qkv.weight.grad is not None
    assert torch.allclose(got.double(), _unfolded(blk.eval(), x), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ changes after the form was decided
# Both blocks keep the answer of their checks and their packed weights between calls
# (fastwin/layers/inference_plan.py): every change below comes after a first inference call decided on
# the fast form, and the next call must see it.


def _cblock_change(why):
    """A block that took the folded form once, then `why` happened: (block, x, next output, its ops, hook log)."""
    blk = _block(21)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad(), fastwin.set_backend("cpp", strict=True), fastwin.dispatch.record() as first:
        blk(x)
    assert any(op == "linear" for op, _ in first), "the first call did not take the folded form"
    seen, mode, backend = [], torch.no_grad, "cpp"
    if why == "hook":
        blk.norm1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    elif why == "forward pre-hook":
        blk.mlp.fc1.register_forward_pre_hook(lambda m, i: seen.append(i[0].shape))
    elif why == "reference backend":
        backend = "reference"
    elif why == "train-mode BatchNorm":
        blk.norm2.train()
    elif why == "replaced activation":
        blk.mlp.act = nn.ReLU()
    elif why == "replaced conv":
        blk.conv2 = nn.Conv2d(16, 16, 1)
    elif why == "requires grad":
        for p in blk.parameters():
            p.requires_grad_(False)
        blk.conv2.weight.requires_grad_(True)
        mode = torch.enable_grad
    elif why == "inference-mode weight":
        with torch.inference_mode():
            blk.mlp.fc2.weight = nn.Parameter(torch.randn(16, 32, 1, 1))  # no version counter
    with mode(), fastwin.set_backend(backend), fastwin.dispatch.record() as ran:
        got = blk(x)
    return blk, x, got, ran, seen


@pytest.mark.parametrize("why", ["hook", "forward pre-hook", "reference backend", "train-mode BatchNorm",
                                 "replaced activation", "replaced conv", "requires grad", "inference-mode weight"])
def test_cblock_sees_changes_made_after_the_folded_form_was_chosen(why):
    blk, x, got, ran, seen = _cblock_change(why)
    folded = any(op == "linear" for op, _ in ran)
    assert folded == (why == "replaced conv"), f"after {why}: {ran}"  # a new plain conv folds (its own weights)
    if why in ("hook", "forward pre-hook"):
        assert len(seen) == 1
    if why == "requires grad":
        got.square().sum().backward()
        assert blk.conv2.weight.grad is not None
    exact = _unfolded(blk, x)
    assert torch.allclose(got.detach().double(), exact, rtol=1e-4, atol=1e-4)


def test_cblock_repacks_after_the_packed_weight_cache_is_cleared_and_follows_a_new_dtype():
    from fastwin.backend import onednn

    blk = _block(22)
    x = torch.randn(2, 16, 8, 8)
    got = _check(blk, x)
    onednn.clear_cache()
    assert torch.equal(_check(blk, x), got)
    assert len(onednn._cache) > 0, "the block did not repack after clear_cache()"
    with torch.no_grad(), fastwin.set_backend("cpp"), fastwin.dispatch.record() as ran:
        got64 = blk.double()(x.double())  # float64 parameters (`.data` swapped in place) and input
    assert not any(op == "linear" for op, _ in ran)
    assert torch.allclose(got.double(), got64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("why", ["hook", "pinned attention", "replaced activation", "requires grad", "layer norm eps"])
def test_sablock_sees_changes_made_after_the_inference_form_was_chosen(why):
    blk = _sablock(23)
    x = torch.randn(2, 32, 4, 4)
    assert _sablock_form_ran(blk, x)
    seen, mode = [], torch.no_grad
    if why == "hook":
        blk.attn.proj.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    elif why == "pinned attention":
        blk.attn.backend = "reference"
    elif why == "replaced activation":
        blk.mlp.act = nn.SiLU()
    elif why == "requires grad":
        for p in blk.parameters():
            p.requires_grad_(False)
        blk.mlp.fc1.bias.requires_grad_(True)
        mode = torch.enable_grad
    elif why == "layer norm eps":
        blk.norm2.eps = 0.5  # read on every call: the form still runs, with the new eps
    with mode(), fastwin.set_backend("cpp"), fastwin.dispatch.record() as ran:
        got = blk(x)
    assert _form_ran(ran) == (why == "layer norm eps"), ran
    if why == "hook":
        assert seen == [(2, 16, 32)]
    if why == "requires grad":
        got.square().sum().backward()
        assert blk.mlp.fc1.bias.grad is not None
    assert torch.allclose(got.detach().double(), _unfolded(blk, x), rtol=1e-4, atol=1e-4)
