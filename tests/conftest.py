"""Test configuration: hypothesis profiles, the CUDA simulator, and where data is.

Profiles: 'ci' (default under CI=true) keeps example counts small enough for 2 cores;
'dev' (default otherwise) runs a few more; 'thorough' for a long local run.
Select with HYPOTHESIS_PROFILE=name.

Data: tests read MNIST through $TINYVAE_DATA; if it is unset and a ``shared/data`` folder
sits beside the repository (as on the project's machines), that folder is used; otherwise
the loader's normal search (and download) applies.
"""
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings


def _gpu_present() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except (ImportError, RuntimeError):   # no CuPy, or CuPy without a driver/device
        return False


_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "TINYVAE_DATA" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["TINYVAE_DATA"] = str(_SHARED_DATA)

GPU = _gpu_present()
# Without a GPU, the CUDA kernels run in Numba's CUDA simulator. This must be decided
# before anything imports numba.cuda (tinyvae and kernels do, on import).
if not GPU:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=12, derandomize=True, **_common)
settings.register_profile("dev", max_examples=25, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(pytest.mark.gpu)


@pytest.fixture(autouse=True)
def _grad_mode_restored():
    """Every test starts and ends with gradient recording on."""
    from tinyvae.autograd import is_grad_enabled
    assert is_grad_enabled()
    yield
    assert is_grad_enabled()
