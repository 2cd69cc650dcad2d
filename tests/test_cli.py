"""`fastwin info | check | bench` run on CPU with sensible output."""
import subprocess
import sys

import pytest

from fastwin import cli


def test_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("reference", "triton", "cuda", "cpp"):
        assert name in out
    assert "torch" in out


def test_check_reference_passes(capsys):
    assert cli.main(["check", "--backend", "reference", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "shifted_window_attention" in out and "dwconv2d" in out and "MISMATCH" not in out


def test_bench_small_model(capsys, tmp_path):
    plot = tmp_path / "speed.png"
    args = ["bench", "--model", "swin_tiny_patch4_window7_224", "--batch", "1", "--img-size", "64",
            "--iters", "1", "--warmup", "0", "--no-compile", "--quiet"]
    try:
        import matplotlib  # noqa: F401

        args += ["--plot", str(plot)]
    except ImportError:
        plot = None
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "reference" in out and "img/s" in out
    if plot is not None:
        assert plot.stat().st_size > 1000


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "fastwin", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "bench" in out.stdout


def test_unknown_model_is_clear():
    with pytest.raises(ValueError, match="unknown model"):
        cli.main(["bench", "--model", "swin_tiny", "--quiet", "--no-compile"])
