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
