"""The 1-D side of the model layer: the Gated CNN block streamed one token at a time."""

import pytest
import torch

from mambaout.models.mambaout import GatedCNNBlock
from mambaout.models.sequence import sequence_block


@pytest.mark.parametrize("mixer", ["conv", "ssm", "attn_causal"])
def test_stepping_a_causal_block_token_by_token_gives_its_forward_output(mixer):
    torch.manual_seed(0)
    block = sequence_block(24, mixer, kernel_size=4, expansion_ratio=8 / 3, mixer_kwargs={}).eval()
    x = torch.randn(2, 37, 24)
    with torch.no_grad():
        whole = block(x)
        state, steps = block.mixer.init_state(2), []
        for t in range(x.shape[1]):
            y, state = block.step(x[:, t], state)
            steps.append(y)
    assert isinstance(block, GatedCNNBlock)
    assert torch.allclose(torch.stack(steps, dim=1), whole, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mixer", ["conv", "ssm", "attn_causal"])
def test_a_causal_block_streamed_in_chunks_gives_its_forward_output(mixer):
    torch.manual_seed(0)
    block = sequence_block(24, mixer, kernel_size=4, expansion_ratio=8 / 3, mixer_kwargs={}).eval()
    x = torch.randn(2, 37, 24)
    with torch.no_grad():
        whole = block(x)
        state, chunks = block.mixer.init_state(2), []
        for start, end in ((0, 5), (5, 6), (6, 30), (30, 37)):  # uneven cuts, one of a single token
            y, state = block.stream(x[:, start:end], state)
            chunks.append(y)
    assert torch.allclose(torch.cat(chunks, dim=1), whole, atol=1e-5, rtol=1e-4)
