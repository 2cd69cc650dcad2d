"""The README's claims, checked against the code: the quick start is what CI runs (two commands, the
second one verbatim in .ci/run), the `backends()` example is what the code prints, the model list is
`fastwin.list_models()`, and the Python version and dependencies agree with pyproject.toml."""
import itertools
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch

import fastwin

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _expand(pattern: str):
    """`swin_{tiny,small}_x` -> ["swin_tiny_x", "swin_small_x"] (any number of brace groups)."""
    parts = re.split(r"\{([^}]*)\}", pattern)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def _readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", _section("Quick start"), flags=re.S)


def test_readme_has_exactly_two_quick_start_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2, cmds
    assert all("\n" not in c for c in cmds), "each command must be one copy-paste line"
    assert cmds[0].rstrip().endswith("fastwin bench")
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci


def test_python_version_and_numpy_agree_with_pyproject():
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'requires-python = ">=(3\.\d+)"', pyproject).group(1)
    assert f"Python ≥ {version}" in _section("Quick start")
    assert version != "3.9", "torch 2.13 (the quick start's pin) has no Python 3.9 wheels"
    deps = re.search(r"^dependencies = \[(.*?)\]", pyproject, flags=re.M).group(1)
    assert '"numpy"' in deps, "torch imports numpy at startup and warns without it"
    assert f'target-version = "py{version.replace(".", "")}"' in pyproject


def test_model_list_is_list_models():
    models = _section("Models").split("`fastwin.list_models()`", 1)[1].split("\n\n", 2)[1]
    listed = [n for tok in re.findall(r"`([a-z0-9_{},]+)`", models) for n in _expand(tok)]
    assert sorted(listed) == fastwin.list_models(), "README model list != fastwin.list_models()"


def test_no_pretrained_download_claim_holds():
    assert "No pretrained downloads" in _section("What is not supported (yet)")
    with torch.device("meta"), pytest.raises(ValueError, match="downloads no pretrained weights"):
        fastwin.create_model("swin_tiny_patch4_window7_224", pretrained=True)


def test_backends_example_is_what_the_code_prints():
    """The README shows `print(fastwin.backends())` on a CPU-only machine after the quick start."""
    using = _section("Using it")
    shown = re.search(r"print\(fastwin\.backends\(\)\).*\n# (\{.*\})\n", using).group(1)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(CUDA_VISIBLE_DEVICES="", FASTWIN_BACKEND="auto")
    code = "import warnings; warnings.simplefilter('ignore'); import fastwin; print(fastwin.backends())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    printed = out.stdout.strip().splitlines()[-1]
    if "cpp: yes" not in printed:
        pytest.skip(f"fastwin._C is not built here, so this machine prints {printed}")
    assert printed == shown
    flags = fastwin.backends()
    assert isinstance(flags, dict) and all(isinstance(v, bool) for v in flags.values())
    assert all(isinstance(flags.reasons[k], str) for k, ok in flags.items() if not ok)
