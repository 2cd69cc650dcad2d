"""The cpp backend's CPU inference GEMMs (oneDNN, prepacked weights, fused GELU / residual epilogues;
fastwin/backend/onednn.py) against the reference: each op, whole models, and every way a weight can
change after it was packed (in-place update, load_state_dict, `.data` swap, an optimizer step)."""

import pytest
import torch
import torch.nn as nn

import fastwin
from fastwin import ops, testing
from fastwin.backend import onednn

pytestmark = pytest.mark.skipif(not (fastwin.backends()["cpp"] and torch.backends.mkldnn.is_available()),
                                reason="needs the cpp backend and torch's oneDNN")


def _check(got, exact, low):
    """SPEC §6: the fast result within the rule's bound of the fp64 reference (low: fp32 reference)."""
    err, b = testing.max_err(got, exact), testing.bound(low, exact, torch.float32)
    assert err <= b, f"max error {err:.3e} > bound {b:.3e}"


def _packed(weight) -> bool:
    entry = onednn._cache.get(id(weight))
    return entry is not None and entry.ref() is weight


OP_CASES = {
    "linear": (lambda x, w, b, r: ops.linear(x, w, b), ((3, 7, 24), (40, 24))),
    "linear+residual": (lambda x, w, b, r: ops.linear(x, w, b, r), ((3, 7, 24), (40, 24))),
    "linear_gelu": (lambda x, w, b, r: ops.linear_gelu(x, w, b), ((2, 5, 6, 24), (40, 24))),
    "linear_gelu tanh": (lambda x, w, b, r: ops.linear_gelu(x, w, b, "tanh"), ((9, 24), (40, 24))),
    "conv1x1 gelu": (lambda x, w, b, r: ops.conv1x1(x, w, b, "none"), ((2, 12, 5, 6), (20, 12, 1, 1))),
    "conv1x1 gelu tanh": (lambda x, w, b, r: ops.conv1x1(x, w, b, "tanh"), ((2, 12, 5, 6), (20, 12, 1, 1))),
}


def _inputs(x_shape, w_shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=g, dtype=torch.float64)
    w = torch.randn(w_shape, generator=g, dtype=torch.float64) * w_shape[1] ** -0.5
    b = torch.randn(w_shape[0], generator=g, dtype=torch.float64)
    out_shape = x_shape[:-1] + (w_shape[0],) if len(w_shape) == 2 else (x_shape[0], w_shape[0]) + x_shape[2:]
    r = torch.randn(out_shape, generator=g, dtype=torch.float64)
    return x, w, b, r


def _reference(fn, *tensors):
    with fastwin.set_backend("reference"):
        return fn(*[t.double() for t in tensors]), fn(*[t.float() for t in tensors])


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("name", list(OP_CASES))
def test_op_inference_matches_reference_and_repacks_after_update(name, mode):
    fn, (xs, ws) = OP_CASES[name]
    x, w, b, r = _inputs(xs, ws, seed=len(name))
    x, w, b, r = x.float(), nn.Parameter(w.float()), b.float(), r.float()
    grad_off = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with grad_off(), fastwin.set_backend("cpp", strict=True):
        got = fn(x, w, b, r)
    assert _packed(w), "the oneDNN path did not run"
    exact, low = _reference(fn, x, w.detach(), b, r)
    _check(got, exact, low)
    with torch.no_grad():  # an in-place update (what optimizer.step and load_state_dict do) bumps the version
        w.mul_(-1.5).add_(0.1)
    with grad_off(), fastwin.set_backend("cpp", strict=True):
        got = fn(x, w, b, r)
    exact, low = _reference(fn, x, w.detach(), b, r)
    _check(got, exact, low)
    w.data = torch.randn_like(w)  # a new storage behind the same Parameter
    with grad_off(), fastwin.set_backend("cpp", strict=True):
        got = fn(x, w, b, r)
    exact, low = _reference(fn, x, w.detach(), b, r)
    _check(got, exact, low)


def test_autograd_calls_take_the_differentiable_path():
    x, w, b, r = (t.float() for t in _inputs((4, 6, 16), (24, 16), seed=3))
    w = nn.Parameter(w)
    with fastwin.set_backend("cpp", strict=True):
        out = ops.linear(x, w, b, r)
    assert not _packed(w) and out.requires_grad
    (gw,) = torch.autograd.grad(out.square().sum(), [w])
    w64 = w.detach().double().requires_grad_()
    want = ops.linear(x.double(), w64, b.double(), r.double())
    (gw64,) = torch.autograd.grad(want.square().sum(), [w64])
    assert torch.allclose(gw.double(), gw64, rtol=1e-4, atol=1e-4)


def test_autocast_and_inference_tensor_weights_take_the_reference():
    x, w, b, _ = (t.float() for t in _inputs((5, 16), (8, 16), seed=4))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), fastwin.set_backend("cpp"):
        got = ops.linear(x, w, b)
    assert got.dtype == torch.bfloat16 and not _packed(w)  # autocast's bf16 GEMM, as the reference runs it
    with torch.inference_mode():
        wi = w.clone()  # an inference tensor: no version counter to invalidate a packed copy by
        got = ops.linear(x, wi, b, backend="cpp")
    assert not _packed(wi)
    assert torch.equal(got, torch.nn.functional.linear(x, wi, b))


def test_packed_weights_are_dropped_with_their_weight():
    x, w, b, _ = (t.float() for t in _inputs((5, 16), (8, 16), seed=5))
    with torch.no_grad():
        ops.linear(x, w, b, backend="cpp")
    key = id(w)
    assert key in onednn._cache
    del w
    assert key not in onednn._cache


def _tiny(name):
    if name == "swin":
        return fastwin.create_model("swin_tiny_patch4_window7_224", img_size=56, embed_dim=16, depths=(2, 1),
                                    num_heads=(1, 2), window_size=7, num_classes=7, drop_path_rate=0.2), 56
    return fastwin.create_model("uniformer_small", depth=(1, 1, 1, 1), embed_dim=(16, 32, 32, 64), head_dim=16,
                                num_classes=7, drop_path_rate=0.2), 64


def _noisy(model):
    for p in model.parameters():  # non-trivial biases, norms and tables instead of the init constants
        p.data.add_(0.05 * torch.randn_like(p))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def _model_check(model, x):
    exact_model = _double(model)
    with torch.inference_mode():
        with fastwin.set_backend("cpp", strict=True), fastwin.dispatch.record() as ran:
            got = model(x)
        with fastwin.set_backend("reference"):
            low = model(x)
        exact = exact_model(x.double())
    _check(got, exact, low)
    return ran


def _double(model):
    import copy

    return copy.deepcopy(model).double()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["swin", "uniformer"])
def test_model_inference_matches_reference_after_load_state_dict_and_training(name):
    torch.manual_seed(0)
    model, size = _tiny(name)
    model = _noisy(model).eval()
    x = torch.randn(2, 3, size, size)
    ran = _model_check(model, x)
    assert {op for op, _ in ran} >= {"linear", "linear_gelu"} and all(b == "cpp" for _, b in ran), ran
    packed = [p for p in model.parameters() if _packed(p)]
    assert packed, "no weight went through the packed path"
    other, _ = _tiny(name)
    model.load_state_dict(_noisy(other).state_dict())  # same Parameter objects, new values in place
    _model_check(model, x)
    model.train()  # a training step with the cpp backend, then inference again
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with fastwin.set_backend("cpp"):
        model(x).square().mean().backward()
    opt.step()
    model.eval()
    _model_check(model, x)


def test_forward_ad_and_vmap_take_the_reference():
    import torch.autograd.forward_ad as fwAD

    x, w, b, _ = (t.float() for t in _inputs((3, 5, 16), (8, 16), seed=6))
    tangent = torch.randn_like(x)
    with torch.no_grad(), fwAD.dual_level():
        out = ops.linear(fwAD.make_dual(x, tangent), w, b, backend="cpp")
        jvp = fwAD.unpack_dual(out).tangent
    assert jvp is not None and torch.allclose(jvp, tangent @ w.T, atol=1e-5)
    with torch.no_grad():
        got = torch.func.vmap(lambda t: ops.linear(t, w, b, backend="cpp"))(x)
    assert not _packed(w)
    assert torch.allclose(got, torch.nn.functional.linear(x, w, b), atol=1e-6)


def test_stem_conv_runs_on_a_channels_last_copy_only_in_fast_inference():
    """`projection.patch_conv`: bit-identical to the conv; the channels-last kernel (output in channels-last
    memory) only for a plain conv over an NCHW image of <= 4 channels in fp32 inference off the reference."""
    from fastwin.layers import projection

    torch.manual_seed(4)
    conv = nn.Conv2d(3, 8, 4, 4)
    x = torch.randn(2, 3, 16, 12)
    want = conv(x)
    with torch.no_grad():
        got = projection.patch_conv(conv, x)
        assert got.is_contiguous(memory_format=torch.channels_last) and torch.equal(got, want)
        with fastwin.set_backend("reference"):
            assert projection.patch_conv(conv, x).is_contiguous()
        wide = nn.Conv2d(8, 8, 2, 2)
        assert projection.patch_conv(wide, torch.randn(1, 8, 8, 8)).is_contiguous()
        handle = conv.register_forward_hook(lambda m, i, o: None)
        assert projection.patch_conv(conv, x).is_contiguous()
        handle.remove()
    assert projection.patch_conv(conv, x).is_contiguous()  # autograd records the conv: unchanged
    with torch.no_grad():
        model = fastwin.create_model("swin_tiny_patch4_window7_224", img_size=56, embed_dim=16, depths=(2, 1),
                                     num_heads=(1, 2), window_size=7, num_classes=7).eval()
        img = torch.randn(1, 3, 56, 56)
        fast = model(img)
        with fastwin.set_backend("reference"):
            ref = model(img)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
