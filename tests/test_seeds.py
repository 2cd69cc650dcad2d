"""tests/conftest.py seeds every test reproducibly and names the seed when a test fails (issue 22
item 10: it seeded with `hash()` of the test id, which Python randomizes per process)."""
import os
import subprocess
import sys
import zlib

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def test_seed_is_the_crc32_of_the_test_id(request):
    assert torch.initial_seed() == zlib.crc32(request.node.nodeid.encode()) % (2**31)


@pytest.mark.slow  # pytest in fresh interpreters
def test_a_failure_reports_its_seed_in_any_process(tmp_path):
    """A failing test in a child process with a different hash seed: the report names the seed the
    test really ran with."""
    (tmp_path / "test_fails.py").write_text(
        "import torch\n\ndef test_fails():\n    assert False, f'initial seed {torch.initial_seed()}'\n")
    path = os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=path)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                          str(tmp_path / "test_fails.py")], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(HERE), timeout=300)
    out = run.stdout + run.stderr
    nodeid = [line for line in out.splitlines() if "zlib.crc32(" in line]
    assert run.returncode == 1 and nodeid, out
    seed = int(nodeid[0].split("torch.manual_seed(")[1].split(")")[0])
    assert f"initial seed {seed}" in out, out
    node = nodeid[0].split("zlib.crc32(")[1].rsplit(")", 1)[0].strip("'\"")
    assert seed == zlib.crc32(node.encode()) % (2**31)
