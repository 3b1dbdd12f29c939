import pytest
import torch

from mambaout.ssm import selective_scan


@pytest.fixture(scope="module", autouse=True)
def warm_fused_scan():
    """Compile (first run on a machine, ~25 s CPU) or load (cached, ~1 s) the numba kernels once per module."""
    u, B = torch.randn(1, 2, 3, requires_grad=True), torch.randn(1, 2, 3)
    selective_scan(u, torch.rand(1, 2, 3), -torch.rand(2, 2), B, B).sum().backward()
