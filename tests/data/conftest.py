"""Fixtures of the data tests: one intra-op thread for the module."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on 2 cores shared with other jobs, two spinning OpenMP threads are ~4x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
