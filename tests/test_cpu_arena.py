"""fastwin's CPU activation arena (csrc/cpu/activation_arena.cpp, fastwin/backend/cpu_arena.py): the models'
inference forwards run in it and give the same results, it reuses what it kept, it keeps nothing between
scopes but what the scopes gave back, its limit and off switch hold, and it is safe across threads,
exceptions and the oneDNN raw-allocation path."""
import os
import subprocess
import sys
import threading

import pytest
import torch

import fastwin
from fastwin.backend import cpu_arena

pytestmark = pytest.mark.skipif(not cpu_arena.stats(), reason="needs fastwin._C with the arena (glibc)")


def _tiny_uniformer():
    return fastwin.create_model("uniformer_small", depth=(1, 1, 1, 1), embed_dim=(16, 32, 32, 64), head_dim=16,
                                num_classes=7).eval()


def _tiny_swin():
    return fastwin.create_model("swin_tiny_patch4_window7_224", img_size=56, embed_dim=16, depths=(2, 1),
                                num_heads=(1, 2), window_size=7, num_classes=7).eval()


def _depth_seen_by(module):
    """A forward hook on `module` that records the arena's open-scope count while it runs."""
    seen = []
    module.register_forward_hook(lambda m, i, o: seen.append(cpu_arena.stats()["depth"]))
    return seen


@pytest.mark.parametrize("make,size", [(_tiny_uniformer, 64), (_tiny_swin, 56)], ids=["uniformer", "swin"])
def test_inference_forwards_run_in_the_arena_with_unchanged_results(make, size):
    torch.manual_seed(0)
    model = make()
    x = torch.randn(2, 3, size, size)
    seen = _depth_seen_by(next(m for m in model.modules() if len(list(m.children())) == 0))
    with torch.no_grad():
        want = model(x)  # the first scoped forward: nothing kept yet
        hits = cpu_arena.stats()["hits"]
        again = model(x)
        assert cpu_arena.stats()["hits"] > hits, "a repeated forward reused nothing"
        with torch.inference_mode():
            feats = model.forward_features(x)
        maps = model.forward_intermediates(x, intermediates_only=True)
    assert seen == [1] * 4, seen
    assert torch.equal(again, want)
    with cpu_arena.scope():  # the arena's blocks are ordinary memory: the reference path agrees too
        with torch.no_grad(), fastwin.set_backend("reference"):
            ref = model(x)
    torch.testing.assert_close(ref, want, rtol=1e-4, atol=1e-5)
    assert feats.shape[0] == 2 and len(maps) >= 2
    assert cpu_arena.stats()["depth"] == 0


def test_training_and_grad_mode_forwards_do_not_use_it():
    model = _tiny_uniformer()
    seen = _depth_seen_by(model.blocks1[0])
    x = torch.randn(1, 3, 64, 64)
    model(x)  # eval, grad mode on
    model.train()
    model(x).sum().backward()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))  # train mode, no grad: an inference all the same
    assert seen == [0, 0, 1]


def test_blocks_outlive_their_scope_and_nothing_is_kept_between_scopes():
    cpu_arena.release()
    with cpu_arena.scope():
        kept_out = torch.randn(1 << 16)  # made in the scope, freed after it
        tmp = torch.randn(1 << 16)
        del tmp  # freed inside: kept
        kept = cpu_arena.stats()["kept_bytes"]
        assert kept >= 4 << 16
    before = cpu_arena.stats()["kept_bytes"]
    assert before == kept
    assert torch.isfinite(kept_out).all()
    del kept_out  # freed outside: freed, not kept
    scratch = torch.empty(1 << 16)  # outside a scope: torch's default allocator
    del scratch
    assert cpu_arena.stats()["kept_bytes"] == before
    with cpu_arena.scope():
        hits = cpu_arena.stats()["hits"]
        y = torch.empty(1 << 16)
        assert cpu_arena.stats()["hits"] == hits + 1  # the block the first scope gave back
        y.fill_(3.0)
        assert (y == 3.0).all()
        del y  # given back inside: kept
    assert cpu_arena.release() >= 4 << 16
    assert cpu_arena.stats()["kept_bytes"] == 0


def test_zero_size_and_exceptions_leave_it_consistent():
    with cpu_arena.scope():
        e = torch.empty(0)
        assert e.numel() == 0
    with pytest.raises(ValueError):
        with torch.no_grad():
            _tiny_uniformer()(torch.randn(1, 3, 16, 16))  # too small for the patch stem
    assert cpu_arena.stats()["depth"] == 0


def test_onednn_raw_allocations_across_scope_boundaries():
    """ideep allocates and frees through the *current* allocator's raw interface: packing inside a scope
    and freeing the packed weight outside it (and the reverse) must both work."""
    if not fastwin.backends()["cpp"]:
        pytest.skip("needs the cpp backend")
    from fastwin.backend import onednn

    torch.manual_seed(1)
    x, w, b = torch.randn(5, 24), torch.nn.Parameter(torch.randn(40, 24)), torch.randn(40)
    want = torch.nn.functional.linear(x, w, b)
    for rounds in range(3):
        with torch.no_grad():
            if rounds % 2:
                with cpu_arena.scope():
                    got = fastwin.ops.linear(x, w, b, backend="cpp")
            else:
                got = fastwin.ops.linear(x, w, b, backend="cpp")
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        onednn.clear_cache()  # frees the packed weight in the other scope state than it was made in
        with cpu_arena.scope():
            w.data.mul_(1.0)


def test_concurrent_scoped_forwards():
    torch.manual_seed(2)
    model = _tiny_uniformer()
    xs = [torch.randn(1, 3, 64, 64) for _ in range(4)]
    with torch.no_grad(), fastwin.set_backend("reference"):
        want = [model(x) for x in xs]
    errors = []

    def work(i):
        try:
            for _ in range(3):
                with torch.no_grad():
                    got = model(xs[i])
                torch.testing.assert_close(got, want[i], rtol=1e-4, atol=1e-5)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert cpu_arena.stats()["depth"] == 0


_PROBE = ("import torch, fastwin; from fastwin.backend import cpu_arena\n"
          "m = fastwin.create_model('uniformer_small', depth=(1, 1, 1, 1), embed_dim=(16, 32, 32, 64), head_dim=16,"
          " num_classes=7).eval()\n"
          "with torch.no_grad(): m(torch.randn(1, 3, 64, 64)); m(torch.randn(1, 3, 64, 64))\n"
          "print(cpu_arena.stats())\n")


@pytest.mark.parametrize("env,expect", [({"FASTWIN_CPU_ARENA": "0"}, ["{}"]),
                                        ({"FASTWIN_CPU_ARENA_MB": "0"}, ["'kept_bytes': 0", "'hits': 0", "'installed': 1"])],
                         ids=["off", "limit-0"])
def test_off_switch_and_limit(env, expect):
    full = {k: v for k, v in os.environ.items() if not k.startswith("FASTWIN_CPU_ARENA")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", _PROBE], env=full, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert all(e in last for e in expect), last


@pytest.mark.parametrize("make,size", [(_tiny_uniformer, 64), (_tiny_swin, 56)], ids=["uniformer", "swin"])
def test_inference_compiles_fullgraph(make, size):
    """Under torch.compile the arena scope, the stem's channels-last copy and the folded forms all step
    aside without a graph break (folding.versioned used to break on `is_inference`)."""
    torch.manual_seed(5)
    model = make()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model, backend="eager", fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
