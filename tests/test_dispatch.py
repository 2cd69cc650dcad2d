"""Backend table, set_backend (plain and as a context manager), FASTWIN_BACKEND, auto fallback."""
import os
import subprocess
import sys
import warnings

import pytest
import torch

import fastwin
from fastwin import dispatch


def test_backends_table_has_every_backend_and_reasons():
    table = fastwin.backends()
    assert set(table) == {"reference", "triton", "cuda", "cpp"}
    assert table["reference"] is True
    for name, ok in table.items():
        assert isinstance(ok, bool)
        if not ok:
            assert isinstance(table.reasons[name], str) and table.reasons[name]


def test_reference_implements_every_op():
    assert set(dispatch._module("reference").IMPLS) == set(dispatch.OPS)


def test_set_backend_is_a_context_manager_and_restores():
    assert fastwin.get_backend() == "auto"
    with fastwin.set_backend("reference"):
        assert fastwin.get_backend() == "reference"
        with fastwin.set_backend("auto"):
            assert fastwin.get_backend() == "auto"
        assert fastwin.get_backend() == "reference"
    assert fastwin.get_backend() == "auto"


def test_set_backend_plain_call_persists():
    fastwin.set_backend("reference")
    try:
        assert fastwin.get_backend() == "reference"
    finally:
        fastwin.set_backend("auto")


def test_set_default_backend_is_process_wide_until_a_thread_chooses(monkeypatch):
    import threading

    monkeypatch.setattr(dispatch._default, "backend", "auto")
    seen = []
    with fastwin.set_backend("auto"):
        fastwin.set_default_backend("reference")
        t = threading.Thread(target=lambda: seen.append(fastwin.get_backend()))
        t.start()
        t.join()
        assert fastwin.get_backend() == "auto"  # this thread chose explicitly
    assert seen == ["reference"]


def test_unknown_backend_is_value_error():
    with pytest.raises(ValueError, match="backend must be one of"):
        fastwin.set_backend("fastest")


def test_unavailable_backend_says_why():
    table = fastwin.backends()
    missing = [n for n, ok in table.items() if not ok]
    if not missing:
        pytest.skip("every backend is available here")
    with pytest.raises(RuntimeError, match="unavailable"):
        fastwin.set_backend(missing[0])


def test_auto_runs_every_op_and_reports_backend():
    qkv = torch.randn(1, 8, 8, 3 * 2 * 16)
    with dispatch.record() as ran:
        out = fastwin.ops.shifted_window_attention(qkv, 2, 4, 2)
    assert out.shape == (1, 8, 8, 32)
    assert len(ran) == 1 and ran[0][0] == "shifted_window_attention" and ran[0][1] in fastwin.backends()


def test_describe_is_pure_and_typed():
    qkv = torch.randn(1, 8, 8, 3 * 2 * 16, requires_grad=True)
    with dispatch.record() as ran:
        call = fastwin.ops.describe("shifted_window_attention", qkv, 2, 4, 2, pad_order="pad_roll")
    assert ran == []  # nothing ran
    assert isinstance(call, dispatch.WindowAttentionCall)
    assert (call.window_size, call.shift_size, call.pad_order, call.head_dim, call.requires_grad) == (
        (4, 4), (2, 2), "pad_roll", 16, True)
    assert dispatch.select(call)[0] in fastwin.backends()
    with pytest.raises(ValueError, match="op must be one of"):
        fastwin.ops.describe("conv3d", qkv)


def _fake_backend_call():
    return dispatch.AttentionCall("attention", "cpu", torch.float32, False, 2, 16, 10)


def test_explicit_backend_falls_back_with_warning_or_raises_when_strict(monkeypatch):
    class Refuses:
        NAME = "cpp"
        IMPLS = {"attention": lambda *a: None}

        @staticmethod
        def available():
            return None

        @staticmethod
        def supports(call):
            return "refused for the test"

    monkeypatch.setitem(dispatch._modules, "cpp", Refuses)
    monkeypatch.setitem(dispatch._unavailable, "cpp", None)
    monkeypatch.setattr(dispatch, "_warned", set())
    monkeypatch.setattr(dispatch, "_chosen", {})
    with fastwin.set_backend("cpp"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            name, _ = dispatch.select(_fake_backend_call())
        assert name == "reference"
        assert any("refused for the test" in str(w.message) for w in caught)
    with fastwin.set_backend("cpp", strict=True):
        with pytest.raises(RuntimeError, match="refused for the test"):
            dispatch.select(_fake_backend_call())
    # auto silently skips it
    name, _ = dispatch.select(_fake_backend_call())
    assert name == "reference"


@pytest.mark.slow  # fresh interpreters
def test_env_var_sets_default():
    code = "import fastwin; print(fastwin.get_backend())"
    env = dict(os.environ, FASTWIN_BACKEND="reference")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "reference"
    env["FASTWIN_BACKEND"] = "bogus"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "auto" and "FASTWIN_BACKEND" in out.stderr


def test_reference_block_compiles_fullgraph():
    """The dispatcher is traceable: torch.compile(fullgraph=True) of an op call does not break."""
    qkv = torch.randn(1, 9, 9, 3 * 2 * 8)
    table = torch.randn(13 * 13, 2)

    def f(q, t):
        return fastwin.ops.shifted_window_attention(q, 2, 7, 3, t)

    with fastwin.set_backend("reference"):
        compiled = torch.compile(f, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(qkv, table), f(qkv, table))
