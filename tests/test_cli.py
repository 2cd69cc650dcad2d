"""`fastwin info | check | bench` run on CPU with sensible output (issue #12 item 9 included)."""
import importlib.util
import io
import pathlib
import subprocess
import sys

import pytest
import torch

from fastwin import bench, cli


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


_TINY = ["bench", "--model", "swin_tiny_patch4_window7_224", "--batch", "1", "--img-size", "32", "--iters", "2",
         "--warmup", "0", "--no-compile", "--quiet"]


@pytest.mark.slow
def test_bench_small_model_has_auto_and_timm_rows(capsys, one_thread):
    assert cli.main(_TINY) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[3:] if line.strip() and not line.startswith("(")}
    assert "img/s" in out and "vs reference" in out
    assert {"reference", "auto", "timm"} <= set(rows), out
    assert "x [" in rows["auto"]  # a speedup with its spread: "1.23x [1.01-1.40]"
    assert "interleaved rounds" in out
    for name in ("onnxruntime", "openvino"):  # the ONNX export's rows: numbers, or why they were skipped
        installed = all(importlib.util.find_spec(m) is not None for m in (name, "onnx", "onnxscript"))
        assert name in rows and (("x [" in rows[name]) if installed else ("skipped" in rows[name])), out


def test_unknown_model_is_a_usage_error_with_suggestions(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--model", "swin_t", "--quiet", "--no-compile"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: fastwin bench" in err and "unknown model 'swin_t'" in err
    assert "swin_tiny_patch4_window7_224" in err and "Traceback" not in err


def test_unknown_model_no_traceback_from_the_console():
    out = subprocess.run([sys.executable, "-m", "fastwin", "bench", "--model", "swin_t", "--quiet"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "did you mean" in out.stderr


def test_bad_backend_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--backend", "foo"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'foo'" in err and "auto" in err and "timm" in err


@pytest.mark.parametrize("value", ["0", "-1"])
def test_bad_round_count_is_rejected(capsys, value):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--iters", value])


def _usage_error(capsys, argv) -> str:
    """The one-line argparse error `argv` ends in (exit code 2, no traceback)."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("flag,value", [
    ("--batch", "0"), ("--batch", "-3"), ("--batch", "two"), ("--img-size", "0"), ("--img-size", "-224"),
    ("--threads", "0"), ("--iters", "x"), ("--warmup", "-1"),
])
def test_bad_numeric_flags_are_usage_errors(capsys, flag, value):
    """Before: `--batch 0` silently ran batch 2 and `--batch -3` ended in a traceback."""
    line = _usage_error(capsys, ["bench", flag, value, "--quiet"])
    assert line.startswith(f"fastwin bench: error: argument {flag}: must be") and value in line


@pytest.mark.parametrize("command", ["check", "bench"])
@pytest.mark.parametrize("value", ["gpu", "mps", "cuda:x"])
def test_bad_device_is_a_usage_error(capsys, command, value):
    line = _usage_error(capsys, [command, "--device", value])
    assert f"error: argument --device: must be cpu, cuda or cuda:N, got {value!r}" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["check", "bench"])
def test_cuda_device_without_cuda_is_a_usage_error(capsys, command):
    """Before: a raw AssertionError ("Torch not compiled with CUDA enabled") from deep inside the run."""
    line = _usage_error(capsys, [command, "--device", "cuda", "--quiet"])
    assert line == f"fastwin {command}: error: argument --device: 'cuda': CUDA is not available here " \
                   "(torch.cuda.is_available() is False; see `fastwin info`)"


def test_usage_errors_from_the_console_have_no_traceback():
    out = subprocess.run([sys.executable, "-m", "fastwin", "bench", "--batch", "-3", "--quiet"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == "fastwin bench: error: argument --batch: must be >= 1, got -3"


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


def test_progress_names_the_running_step_and_writes_plain_lines_off_a_terminal():
    stream = _Stream(tty=False)
    bar = bench.Progress(2, "bench", stream=stream)
    bar.start("warm-up reference+compile (compiling)")
    bar.done()
    bar.start("round 1/1")
    bar.done()
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text
    assert text.splitlines() == ["bench: [1/2] warm-up reference+compile (compiling) ...", "bench: [2/2] round 1/1 ..."]


def test_progress_redraws_in_place_on_a_terminal():
    stream = _Stream(tty=True)
    bar = bench.Progress(1, "bench", stream=stream)
    bar.start("warm-up cpp")
    bar.done()
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\r") and "warm-up cpp ..." in text and text.endswith("\n")


def test_bench_progress_announces_each_step_before_it_runs(capsys, one_thread):
    args = [a for a in _TINY if a != "--quiet"] + ["--backend", "reference", "--backend", "auto"]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "\r" not in err  # pytest's capture is not a terminal: plain lines
    lines = [line for line in err.splitlines() if line.startswith("swin_tiny")]
    assert [line.split("] ", 1)[1] for line in lines] == [
        "warm-up reference ...", "warm-up auto ...", "round 1/2 ...", "round 2/2 ..."]


def test_interleaved_labels_compile_steps_and_rotates_the_order():
    import torch

    stream = _Stream(tty=False)
    calls = []
    steps = {name: (lambda i, name=name: calls.append(name)) for name in ("a", "b+compile", "c")}
    out = bench.interleaved(steps, torch.device("cpu"), rounds=3, warmup=1,
                            progress=bench.Progress(6, "t", stream=stream))
    assert "t: [2/6] warm-up b+compile (compiling) ..." in stream.getvalue().splitlines()
    timed = calls[6:]  # after one warm-up call and one calibration call each
    assert timed == ["a", "b+compile", "c", "b+compile", "c", "a", "c", "a", "b+compile"]
    assert all(len(m.times) == 3 for m in out.values())


def _results():
    ref = bench.Result("reference", [1.0, 1.2, 1.1], 2)
    cpp = bench.Result("cpp", [0.5, 0.8, 0.5], 2)
    auto = bench.Result("auto", [0.4, 0.6, 0.5], 2)
    timm = bench.Result("timm", [], 2, error="skipped: timm is not importable")
    return [ref, auto, cpp, timm]


def test_table_shows_spread_and_skips():
    text = bench.format_table(_results(), "title")
    lines = text.splitlines()
    assert lines[1].split()[:4] == ["backend", "ms/step", "min-max", "ms"]
    cpp = next(line for line in lines if line.startswith("cpp"))
    assert "2.20x [1.50-2.20]" in cpp  # medians 1.1 / 0.5; per-round ratios 2.0, 1.5, 2.2
    assert any(line.startswith("timm") and "skipped" in line for line in lines)


def test_plot_series_follow_the_table_order_with_spreads():
    cases, names, series = bench.plot_series({"case": _results()})
    assert names == ["reference", "auto", "cpp"]  # table order, skipped runners left out
    lo, med, hi = series["cpp"][0]
    assert (lo, med, hi) == pytest.approx((1.5, 2.2, 2.2))


# ------------------------------------- issue 22.11: the speedup column never contradicts the medians

def test_a_slower_median_is_never_shown_as_faster():
    """Before: the column was the median of per-round ratios (here 1.03x) although auto's median time
    is the slower one (3.5 vs 3.0 s)."""
    ref = bench.Result("reference", [1.0, 2.0, 3.0, 4.0, 5.0], 2)
    auto = bench.Result("auto", [0.9, 1.9, 3.5, 3.9, 4.9], 2)  # per-round ratios 1.11 1.05 0.86 1.03 1.02
    row = next(line for line in bench.format_table([ref, auto], "t").splitlines() if line.startswith("auto"))
    assert "0.86x [0.86-1.11] no difference" in row
    assert bench.ratio_spread(ref.times, auto.times) == pytest.approx((3.0 / 3.5, 3.0 / 3.5, 1.0 / 0.9))


@pytest.mark.parametrize("base,other,expect", [
    ([1.0, 1.0, 1.0], [2.0, 2.1, 1.9], "slower"),
    ([2.0, 2.1, 1.9], [1.0, 1.0, 1.0], "faster"),
    ([1.0, 1.0, 1.0], [0.9, 1.1, 1.0], "no difference"),  # range straddles 1.0
    ([1.0, 3.0, 3.0], [1.1, 2.9, 2.9], "no difference"),  # faster median, one slower round
])
def test_verdict_needs_the_median_and_every_round_to_agree(base, other, expect):
    spread = bench.ratio_spread(base, other)
    assert bench.verdict(spread) == expect
    assert bench.format_spread(spread).endswith("no difference") == (expect == "no difference")


def test_benchmark_json_and_readme_table_use_the_same_rule():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    import harness
    import make_table

    times = {"reference": [1.0, 2.0, 3.0, 4.0, 5.0], "auto": [0.9, 1.9, 3.5, 3.9, 4.9]}
    info = harness.speedups(times, "auto")
    assert info == {"speedup_vs_reference": round(3.0 / 3.5, 3), "speedup_vs_reference_spread": [0.857, 1.111],
                    "speedup_vs_reference_verdict": "no difference"}
    # an old file: `speedup_vs_reference` was the median of per-round ratios (1.026): recomputed from the medians
    row = {"stats": {"median": 3.5}, "extra_info": {"speedup_vs_reference": 1.026,
                                                    "speedup_vs_reference_spread": [0.857, 1.111]}}
    index = {("case", "reference"): {"stats": {"median": 3.0}}}
    assert make_table._fmt(make_table._speedup(row, "reference", index, "case")) == "0.86× [0.86–1.11] no difference"


def test_plot_legend_is_outside_the_bars(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saved = {}
    real_savefig = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        saved["fig"] = fig
        return real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        bench.plot({"case": _results()}, str(tmp_path / "p.png"))
    finally:
        plt.Figure.savefig = real_savefig
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = saved["fig"]
    ax = fig.axes[0]
    renderer = FigureCanvasAgg(fig).get_renderer()  # the figure was closed: lay it out again
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.x0 >= ax.get_window_extent(renderer).x1  # beside the axes, never over a bar
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["reference", "auto", "cpp"]
    assert len(ax.containers) >= 3 and any(c.__class__.__name__ == "ErrorbarContainer" for c in ax.containers)
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "fastwin", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "bench" in out.stdout
