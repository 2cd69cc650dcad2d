"""Every fast backend against the reference on the shared case table (`fastwin.testing`), forward and
backward, every dtype the device has, with the SPEC §6 rule; and every backend differentiates the
same inputs. Cases a backend refuses (its `supports()` reason) are skipped with that reason."""
import pytest
import torch

import fastwin
from fastwin import testing

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FAST = [name for name in ("cpp", "triton", "cuda") if fastwin.backends()[name]]
DTYPES = testing.device_dtypes(DEVICE) + ([torch.float64] if DEVICE == "cpu" else [])


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    """Launchers fill what they allocate with NaN, so any element a kernel fails to write shows up."""
    monkeypatch.setenv("FASTWIN_POISON", "1")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("case", testing.CASES, ids=lambda c: c.name)
def test_backend_matches_reference(case, backend, dtype):
    reason = testing.supported(case, backend, DEVICE, dtype)
    if reason is not None:
        pytest.skip(reason)
    result = testing.run_case(case, backend, dtype, DEVICE)
    assert result.ok, f"{case.name} on {backend} ({dtype}): " + "; ".join(result.failures)


def test_every_op_has_cases():
    assert {c.op for c in testing.CASES} == set(fastwin.dispatch.OPS)
