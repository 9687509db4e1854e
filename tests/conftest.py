"""Shared fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test single-threaded: tiny-matrix loops on a shared 2-core box are much slower
    with two spinning OpenMP threads than with one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
