import pytest
import torch


def fill_random(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give a (possibly meta-device) model random weights fast: N(0, 0.02) matrices, norms near 1, gammas ~1."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in model.state_dict().items():
        if v.ndim == 1:
            state[k] = (
                1 + 0.1 * torch.randn(v.shape, generator=g)
                if k.endswith(("weight", "gamma"))
                else 0.1 * torch.randn(v.shape, generator=g)
            )
        else:
            state[k] = 0.02 * torch.randn(v.shape, generator=g)
    model.load_state_dict(state, assign=True)
    return model


@pytest.fixture
def random_weights():
    return fill_random
