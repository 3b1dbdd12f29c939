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


@pytest.mark.parametrize("mixer", ["conv", "ssm", "attn", "attn_causal"])
def test_a_blocks_last_tokens_alone_are_its_forwards_last_tokens_with_the_same_gradients(mixer):
    torch.manual_seed(0)
    block = sequence_block(24, mixer, kernel_size=4, expansion_ratio=8 / 3, mixer_kwargs={})
    x = torch.randn(3, 37, 24, requires_grad=True)
    weights = torch.randn(3, 4, 24)
    whole = block(x)[:, -4:]
    grads_whole = torch.autograd.grad((whole * weights).sum(), [x, *block.parameters()])
    last = block.forward_last(x, 4)
    grads_last = torch.autograd.grad((last * weights).sum(), [x, *block.parameters()])
    assert last.shape == (3, 4, 24)
    torch.testing.assert_close(last, whole, atol=1e-6, rtol=1e-5)
    for a, b in zip(grads_last, grads_whole):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert grads_last[0][:, -4:].abs().min() > 0  # not vacuous: the last tokens' inputs do get gradients


def test_a_sequence_model_computes_the_logits_its_loss_reads_alone():
    from mambaout.models.sequence import SequenceModel

    torch.manual_seed(0)
    model = SequenceModel(vocab_size=10, num_classes=8, dim=32, depth=2, mixer="ssm", max_len=40).eval()
    tokens = torch.randint(0, 10, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, last=4), model(tokens)[:, -4:], atol=1e-6, rtol=1e-5)
        assert model(tokens, last=40).shape == (2, 40, 8)
    for bad in (0, 41):
        with pytest.raises(ValueError, match=f"last must be between 1 and the 40 tokens, got {bad}"):
            model(tokens, last=bad)
    image_block = GatedCNNBlock(16)  # MambaOut's own 2-D conv block: its tokens are an image's
    with pytest.raises(ValueError, match="a block with a 1-D mixer"):
        image_block.forward_last(torch.randn(1, 4, 4, 16), 2)
