"""Shared test setup."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The tests use tiny tensors: one thread is fastest, and on a busy 2-core machine several
    threads would wait on each other (gradcheck took 30 s with 2 threads, 0.5 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="the device for tests that take one (tests/test_device.py): "
                     "cpu, cuda, mps; bench/gpu_check.sh runs them with --device cuda")


@pytest.fixture
def device(request) -> torch.device:
    """The device named by --device; the test is skipped where it is not present."""
    name = request.config.getoption("--device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("--device cuda, but CUDA is not available")
    if name == "mps" and not torch.backends.mps.is_available():
        pytest.skip("--device mps, but MPS is not available")
    return torch.device(name)
