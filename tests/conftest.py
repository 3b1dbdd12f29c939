"""Fixtures every test shares: one intra-op thread per test module.

The suite runs on 2 cores that other jobs also use; two spinning OpenMP threads per process were several times slower
than one there (measured in the first sessions). Tests that are about the thread count set it themselves.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")  # module scope: set before the module's other fixtures run
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
