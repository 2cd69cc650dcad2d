"""GPU readiness, checked on the CPU: toolkit and header discovery, the strict build switch, the
one-config autotune switch, and the gpu_run driver's deadline, per-row JSON and 8-file limit.

The real thing (torch 2.11's CUDA wheel, nvcc, a broken .cu failing the install) is
benchmarks/gpu_rehearsal.sh, whose log is in benchmarks/results/.
"""
import json
import os
import stat
import sys
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "csrc"), os.path.join(ROOT, "benchmarks")]

import build_config  # noqa: E402
import cuda_toolkit  # noqa: E402
import gpu_driver  # noqa: E402


def _executable(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return str(path)


def _fake_toolkit(root):
    """A toolkit dir: bin/nvcc (answers --dryrun like the real one) and include/cuda_runtime_api.h."""
    os.makedirs(root / "include")
    (root / "include" / "cuda_runtime_api.h").write_text("/* fake */\n")
    _executable(root / "bin" / "nvcc", f'#!/bin/sh\necho "#$ _HERE_={root}/bin"\necho "#$ TOP={root}/bin/.."\n')
    return str(root)


# --------------------------------------------------------------------------------------- toolkit lookup

def test_wrapper_script_nvcc_resolves_to_the_toolkit_it_runs(tmp_path):
    real = _fake_toolkit(tmp_path / "cuda-13.0")
    wrapper_dir = tmp_path / "usr" / "local" / "bin"
    _executable(wrapper_dir / "nvcc", f'#!/bin/sh\nexec {real}/bin/nvcc "$@"\n')
    # torch's guess would be tmp/usr/local (the wrapper's grandparent), which has no headers
    assert not cuda_toolkit.is_toolkit(str(tmp_path / "usr" / "local"))
    assert cuda_toolkit.find_toolkit({"PATH": str(wrapper_dir)}) == real


def test_symlinked_nvcc_is_followed(tmp_path):
    real = _fake_toolkit(tmp_path / "cuda")
    os.makedirs(tmp_path / "bin")
    os.symlink(os.path.join(real, "bin", "nvcc"), tmp_path / "bin" / "nvcc")
    assert cuda_toolkit.find_toolkit({"PATH": str(tmp_path / "bin")}) == real


def test_opaque_wrapper_is_asked_with_dryrun(tmp_path):
    real = _fake_toolkit(tmp_path / "hidden")
    (tmp_path / "where").write_text(real)
    wrapper_dir = tmp_path / "wrap"
    _executable(wrapper_dir / "nvcc", f'#!/bin/sh\nexec "$(cat {tmp_path}/where)/bin/nvcc" "$@"\n')
    # the script names no usable .../nvcc path: only asking it finds the toolkit
    assert not any(cuda_toolkit.is_toolkit(os.path.dirname(os.path.dirname(p)))
                   for p in cuda_toolkit._wrapped_nvcc(str(wrapper_dir / "nvcc")))
    assert cuda_toolkit.find_toolkit({"PATH": str(wrapper_dir)}) == real


def test_invalid_cuda_home_is_ignored_and_valid_one_wins(tmp_path):
    real = _fake_toolkit(tmp_path / "tk")
    other = _fake_toolkit(tmp_path / "other")
    assert cuda_toolkit.find_toolkit({"CUDA_HOME": str(tmp_path), "PATH": os.path.join(other, "bin")}) == other
    assert cuda_toolkit.find_toolkit({"CUDA_HOME": real, "PATH": os.path.join(other, "bin")}) == real


def test_wheel_headers_fill_only_what_the_toolkit_lacks(tmp_path):
    toolkit = _fake_toolkit(tmp_path / "tk")
    site = tmp_path / "site-packages"
    os.makedirs(site / "torch")
    for lib, header in (("cu13", "cusparse.h"), ("cu13", "cublas_v2.h"), ("cudnn", "cudnn.h")):
        os.makedirs(site / "nvidia" / lib / "include", exist_ok=True)
        (site / "nvidia" / lib / "include" / header).write_text("")
    assert cuda_toolkit.missing_library_headers(toolkit) == list(cuda_toolkit.LIBRARY_HEADERS)
    cu13 = str(site / "nvidia" / "cu13" / "include")
    assert cuda_toolkit.host_include_flags(toolkit, str(site / "torch")) == ["-idirafter", cu13]
    for header in cuda_toolkit.LIBRARY_HEADERS:  # a full toolkit needs nothing from the wheels
        (tmp_path / "tk" / "include" / header).write_text("")
    assert cuda_toolkit.host_include_flags(toolkit, str(site / "torch")) == []


# ------------------------------------------------------------------------------------ strict vs lenient

def _fake_torch(cuda="13.0", devices=()):
    cuda_mod = types.SimpleNamespace(is_available=lambda: bool(devices), device_count=lambda: len(devices),
                                     get_device_capability=lambda i: devices[i])
    return types.SimpleNamespace(__version__="2.11.0", version=types.SimpleNamespace(cuda=cuda), cuda=cuda_mod)


def test_cuda_unavailable_reasons():
    torch = _fake_torch()
    assert build_config.cuda_unavailable_reason(torch, "/tk", {}) is None
    assert "CPU-only" in build_config.cuda_unavailable_reason(_fake_torch(cuda=None), "/tk", {})
    assert "no CUDA toolkit" in build_config.cuda_unavailable_reason(torch, None, {})
    assert build_config.cuda_unavailable_reason(torch, "/tk", {"FASTWIN_SKIP_CUDA": "1"}) == "FASTWIN_SKIP_CUDA=1"


def test_default_arch_is_the_visible_gpus_only():
    assert build_config.default_arch_list(_fake_torch(devices=[(9, 0)])) == "9.0"
    assert build_config.default_arch_list(_fake_torch(devices=[(9, 0), (8, 0), (9, 0)])) == "8.0;9.0"
    assert build_config.default_arch_list(_fake_torch()) == build_config.DEFAULT_ARCHS


class _FailingBuild:
    def run(self):
        raise RuntimeError("nvcc: deliberately broken")

    def build_extension(self, ext):
        raise RuntimeError("nvcc: deliberately broken")


def test_lenient_build_warns_and_strict_build_raises():
    lenient = build_config._build_ext_class(_FailingBuild, strict=False)()
    with pytest.warns(UserWarning, match="failed to build"):
        lenient.run()
    strict = build_config._build_ext_class(_FailingBuild, strict=True)()
    with pytest.raises(RuntimeError, match="deliberately broken"):
        strict.run()
    assert build_config.require_cuda({"FASTWIN_REQUIRE_CUDA": "1"}) and not build_config.require_cuda({})


def test_require_cuda_with_a_cpu_torch_fails_setup(monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.version.cuda is not None:
        pytest.skip("this torch is a CUDA build")
    monkeypatch.setenv("FASTWIN_REQUIRE_CUDA", "1")
    monkeypatch.setenv("CUDA_HOME", "")  # extension_kwargs sets it: restored afterwards
    monkeypatch.delenv("FASTWIN_SKIP_EXT", raising=False)
    with pytest.raises(SystemExit, match="FASTWIN_REQUIRE_CUDA=1 but the CUDA part cannot be built: torch .* CPU-only"):
        build_config.extension_kwargs()


# ------------------------------------------------------------------------------------- autotune switch

def test_autotune_off_keeps_one_config_and_skips_timing(monkeypatch):
    pytest.importorskip("triton")
    from fastwin.kernels.triton import autotune

    prune = autotune.first_config_unless_autotuning(lambda configs, named_args, **kw: configs[1:])
    monkeypatch.delenv(autotune.AUTOTUNE_ENV, raising=False)
    assert prune(["a", "b", "c", "d"], {}) == ["b", "c", "d"]
    monkeypatch.setenv(autotune.AUTOTUNE_ENV, "0")
    assert prune(["a", "b", "c", "d"], {}) == ["b"]
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # not the interpreter: only the switch skips timing
    assert autotune._bench(lambda: pytest.fail("timed a config"), [0.5, 0.2]) == [0.0, 0.0]


# ------------------------------------------------------------------------------------------ the driver

def _phase(name, cap, code):
    return gpu_driver.Phase(name, cap, lambda outdir, dry: [sys.executable, "-c", code, outdir], name)


_ROWS = """
import sys, time
sys.path.insert(0, {bench!r})
from gpu_driver import RowWriter
w = RowWriter(sys.argv[1] + "/{name}.json", {{"phase": "{name}"}})
for i in range({n}):
    w.add({{"row": i}})
    time.sleep({sleep})
"""


def _rows(name, n, sleep):
    return _ROWS.format(bench=os.path.join(ROOT, "benchmarks"), name=name, n=n, sleep=sleep)


def test_driver_cuts_at_the_deadline_and_keeps_every_finished_row(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_driver, "WRAP_UP_S", 0.1)
    monkeypatch.setattr(gpu_driver, "MIN_PHASE_S", 0.5)
    phases = {p.name: p for p in (
        _phase("quick", 5, _rows("quick", 2, 0.0)),
        _phase("fails", 5, "raise SystemExit(3)"),
        _phase("slow", 60, _rows("slow", 1000, 0.05)),  # far longer than the budget: cut, rows kept
        _phase("late", 5, _rows("late", 1, 0.0)),  # nothing left for it
    )}
    summary = gpu_driver.drive(str(tmp_path), list(phases), budget_s=4.0, phases=phases)
    status = {p["phase"]: p["status"] for p in summary["phases"]}
    assert status == {"quick": "ok", "fails": "failed (exit 3)", "slow": "cut at its time limit",
                      "late": "skipped: no time left"}
    assert summary["total_s"] < 10  # the cut really killed the slow phase
    slow = json.loads((tmp_path / "slow.json").read_text())
    assert slow["meta"] == {"phase": "slow"} and len(slow["rows"]) >= 3
    assert [r["row"] for r in slow["rows"]] == list(range(len(slow["rows"])))
    assert len(json.loads((tmp_path / "quick.json").read_text())["rows"]) == 2
    on_disk = json.loads((tmp_path / gpu_driver.SUMMARY).read_text())["meta"]
    assert [p["phase"] for p in on_disk["phases"]] == list(phases)
    log = (tmp_path / gpu_driver.LOG).read_text()
    assert "planned slow" in log and "slow: cut at its time limit" in log


def test_driver_brings_back_at_most_8_files(tmp_path):
    many = f"import sys\nfor i in range(12): open(sys.argv[1] + f'/extra{{i}}.txt', 'w').write('x')\n" \
           f"open(sys.argv[1] + '/env.json', 'w').write('{{}}')"
    phases = {"many": _phase("many", 10, many)}
    summary = gpu_driver.drive(str(tmp_path), ["many"], budget_s=30, phases=phases)
    files = sorted(os.listdir(tmp_path))
    assert len(files) <= gpu_driver.MAX_FILES
    assert {"env.json", gpu_driver.LOG, gpu_driver.SUMMARY, gpu_driver.BUNDLE} <= set(files)
    assert len(summary["bundled"]) == 12


def test_the_real_plans_fit_their_budgets():
    first = gpu_driver.plan(gpu_driver.FIRST_COMMAND, gpu_driver.DEFAULT_BUDGET_S)
    assert sum(p["planned_s"] for p in first) <= gpu_driver.DEFAULT_BUDGET_S - gpu_driver.WRAP_UP_S
    assert all(p["planned_s"] > 0 for p in first)  # every phase gets a turn if the others use their caps
    second = gpu_driver.plan(gpu_driver.SECOND_COMMAND, gpu_driver.SECOND_BUDGET_S)
    assert second[-1]["phase"] == "sanitize" and second[-1]["planned_s"] > 0
    assert gpu_driver.DEFAULT_BUDGET_S <= 540 and gpu_driver.SECOND_BUDGET_S <= 240


def test_correctness_dry_run_stops_before_cuda(tmp_path, capsys):
    import gpu_phases

    gpu_phases.main(["correctness", str(tmp_path), "--dry-run"])
    out = capsys.readouterr().out
    assert "stopped before its first CUDA call" in out
    names = {c.name for c in gpu_phases.correctness_cases()}
    assert {"swin_t-224-s1", "swin_t-224-s4", "swin_b-384-s1", "uniformer_s-s3", "uniformer_s-s1-pos"} <= names
    assert not os.listdir(tmp_path)  # nothing written before the first CUDA call
