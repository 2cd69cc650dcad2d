"""Test setup: Triton runs under its CPU interpreter when there is no GPU (set before triton loads)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fastwin  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_state():
    """Each test starts on the auto backend with a fixed but test-specific seed."""
    torch.manual_seed(hash(os.environ.get("PYTEST_CURRENT_TEST", "")) % (2**31))
    with fastwin.set_backend("auto"):
        yield


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: intra-op thread hand-offs cost more than the work."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
