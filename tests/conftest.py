"""Test setup: Triton runs under its CPU interpreter when there is no GPU (set before triton loads)."""
import os
import zlib

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fastwin  # noqa: E402


def test_seed(nodeid: str) -> int:
    """The seed of test `nodeid`: a stable hash (crc32), the same in every process and run.

    `hash()` of a string is randomized per process (PYTHONHASHSEED), so it cannot reproduce a failure.
    """
    return zlib.crc32(nodeid.encode()) % (2**31)


test_seed.__test__ = False  # a helper, not a test for pytest to collect


@pytest.fixture(autouse=True)
def _fresh_state(request):
    """Each test starts on the auto backend with a fixed, test-specific seed (printed if it fails)."""
    seed = test_seed(request.node.nodeid)
    request.node.user_properties.append(("torch_seed", seed))
    torch.manual_seed(seed)
    with fastwin.set_backend("auto"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Add the test's seed to a failure's report, so the failing inputs can be drawn again."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        seed = dict(item.user_properties).get("torch_seed", test_seed(item.nodeid))
        report.sections.append(("torch seed", f"torch.manual_seed({seed})  # zlib.crc32({item.nodeid!r})"))


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: intra-op thread hand-offs cost more than the work."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
