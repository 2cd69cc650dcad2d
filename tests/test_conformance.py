"""Every fast backend against the reference on the shared case table (`fastwin.testing`), forward and
backward, every dtype the device has, with the SPEC §6 rule; and every backend differentiates the
same inputs. Cases a backend refuses (its `supports()` reason) are skipped with that reason.

The reference of a (case, dtype) runs once: its inputs, cotangents and results serve every backend."""
import pytest
import torch

import fastwin
from fastwin import testing
from tests.helpers import FAST, poison  # noqa: F401 (the fixture)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = testing.device_dtypes(DEVICE) + ([torch.float64] if DEVICE == "cpu" else [])

pytestmark = pytest.mark.usefixtures("poison")  # launchers' allocations start as NaN
_references = {}  # (case name, dtype) -> testing.Reference, for the backends still to compare


def _reference(case, dtype) -> testing.Reference:
    key = (case.name, dtype)
    if key not in _references:
        _references[key] = testing.reference_run(case, dtype, DEVICE)
    return _references[key]


def _cases():
    """(case, backend) pairs; the Triton interpreter's runs (~3 ms per program) of the cases beyond
    `fastwin check`'s quick list are in the slow lane."""
    slow = DEVICE == "cpu" and "triton" in FAST
    return [pytest.param(case, backend, id=f"{case.name}-{backend}",
                         marks=[pytest.mark.slow] if slow and backend == "triton" and not case.quick else [])
            for case in testing.CASES for backend in FAST]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("case,backend", _cases())
def test_backend_matches_reference(case, backend, dtype):
    reason = testing.supported(case, backend, DEVICE, dtype)
    if reason is not None:
        pytest.skip(reason)
    result = testing.run_case(case, backend, dtype, DEVICE, reference=_reference(case, dtype))
    if backend == FAST[-1]:  # the last backend of this (case, dtype): the reference is no longer needed
        _references.pop((case.name, dtype), None)
    assert result.ok, f"{case.name} on {backend} ({dtype}): " + "; ".join(result.failures)


def test_every_op_has_cases():
    assert {c.op for c in testing.CASES} == set(fastwin.dispatch.OPS)
