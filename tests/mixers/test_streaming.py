"""Streaming mixers: a stream cut into chunks, stepped token by token, or seen whole gives the same outputs, and
attention with rotary positions depends on relative positions only."""

import pytest
import torch

from mambaout import UserError
from mambaout.mixers import build_mixer
from mambaout.mixers.attention import AttentionMixer

C, L = 32, 40  # 32 channels -> 1 attention head of 32
STREAMING = {
    "conv": ("conv", {}),
    "ssm": ("ssm", {}),
    "attn_causal": ("attn_causal", {}),
    "attn_causal_rope": ("attn_causal", {"rope": True}),
    "attn_causal_window": ("attn_causal", {"window": 5}),
    "attn_causal_window_rope": ("attn_causal", {"window": 5, "rope": True}),
    "attn_causal_rope_2_heads": ("attn_causal", {"rope": True, "head_dim": 16}),
}
# chunks of 1, 2, 14 and 23 tokens: shorter and longer than the conv (kernel 4) and the window (5)
CUTS = [(0, 1), (1, 3), (3, 17), (17, L)]


def streaming_mixer(case: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    name, kwargs = STREAMING[case]
    return build_mixer(name, C, kernel_size=4, layout="1d", **kwargs)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("case", STREAMING)
def test_streaming_step_by_step_equals_one_chunk_equals_several_chunks_equals_the_whole_sequence(case):
    mixer = streaming_mixer(case).eval()
    x = torch.randn(2, L, C)
    with torch.no_grad():
        whole = mixer(x)
        one_chunk, _ = mixer(x, mixer.init_state(2))
        state, chunks = mixer.init_state(2), []
        for start, end in CUTS:
            y, state = mixer(x[:, start:end], state)
            chunks.append(y)
        state, steps = mixer.init_state(2), []
        for t in range(L):
            y, state = mixer.step(x[:, t], state)
            steps.append(y)
    assert torch.equal(one_chunk, whole)  # from zeros, a chunk is the offline forward
    assert relative(torch.cat(chunks, dim=1), whole) <= 1e-5  # measured <= 3e-7
    assert relative(torch.stack(steps, dim=1), whole) <= 1e-5


@pytest.mark.parametrize("case", STREAMING)
def test_a_stream_may_switch_between_chunks_and_steps(case):
    mixer = streaming_mixer(case).eval()
    x = torch.randn(1, L, C)
    with torch.no_grad():
        whole = mixer(x)
        state, ys = mixer.init_state(1), []
        y, state = mixer(x[:, :9], state)
        ys.append(y)
        for t in range(9, 21):  # a step after a chunk, past the window's and the cache's first capacity
            y, state = mixer.step(x[:, t], state)
            ys.append(y[:, None])
        y, state = mixer(x[:, 21:], state)  # and a chunk after steps
        ys.append(y)
    assert relative(torch.cat(ys, dim=1), whole) <= 1e-5


@pytest.mark.parametrize("case", ["conv", "ssm", "attn_causal_rope", "attn_causal_window_rope"])
def test_gradients_through_the_carried_state_equal_those_of_one_pass(case):
    mixer = streaming_mixer(case)
    x = torch.randn(2, L, C, requires_grad=True)
    weight = torch.randn(2, L, C)
    leaves = [x, *mixer.parameters()]
    grads_whole = torch.autograd.grad((mixer(x) * weight).sum(), leaves)
    state, chunks = mixer.init_state(2), []
    for start, end in CUTS:
        y, state = mixer(x[:, start:end], state)
        chunks.append(y)
    grads_chunked = torch.autograd.grad((torch.cat(chunks, dim=1) * weight).sum(), leaves)
    for g_whole, g_chunked in zip(grads_whole, grads_chunked):
        assert relative(g_chunked, g_whole) <= 1e-5  # measured <= 1e-6
    assert grads_whole[0][:, :3].abs().max() > 0  # the last chunks' outputs reach the first chunk's tokens


def test_windowed_attention_sees_exactly_the_last_w_tokens_through_its_conv():
    # causal conv kernel 4 reaches 3 tokens back, then attention W - 1 = 5 more
    torch.manual_seed(0)
    mixer = AttentionMixer(C, kernel_size=4, layout="1d", causal=True, window=6, rope=True)
    x = torch.randn(1, 30, C)
    t, reach = 25, 6 - 1 + 4 - 1
    with torch.no_grad():
        base = mixer(x)[0, t]
        for past, changes in ((t - reach, True), (t - reach - 1, False)):
            moved = x.clone()
            moved[0, past] += 5.0
            assert bool((mixer(moved)[0, t] - base).abs().max() > 0) == changes, past  # masked keys weigh exactly 0


def test_rotated_query_key_products_depend_only_on_the_distance_even_millions_of_tokens_in():
    torch.manual_seed(0)
    mixer = AttentionMixer(C, kernel_size=1, layout="1d", causal=True, rope=True)
    x = torch.randn(1, 2, C)

    def score(query_at: int, key_at: int) -> torch.Tensor:
        # token 0 as the key, token 1 as the query, placed at the given absolute positions
        q, _, _ = mixer.project(x[:, 1:], torch.tensor([query_at]))
        _, k, _ = mixer.project(x[:, :1], torch.tensor([key_at]))
        return (q * k).sum()

    with torch.no_grad():
        near = score(7, 3)
        for shift in (1, 1000, 3_000_000):  # a day of 30 frames/s video is 2.6 million frames
            assert abs(score(7 + shift, 3 + shift) - near) <= 1e-5 * near.abs()
        assert abs(score(8, 3) - near) > 1e-2 * near.abs()  # another distance, another score


def test_rope_attention_is_translation_equivariant_in_a_stream():
    # with a window, what follows a prefix of any length gives the same outputs once the window has left the prefix
    mixer = streaming_mixer("attn_causal_window_rope").eval()
    x = torch.randn(1, 20, C)
    reach = 5 - 1 + 4 - 1
    outputs = []
    with torch.no_grad():
        for prefix in (0, 3, 250):
            state = mixer.init_state(1)
            if prefix:
                _, state = mixer(torch.randn(1, prefix, C), state)
            y, _ = mixer(x, state)
            outputs.append(y[:, reach:])
    assert all(relative(y, outputs[0]) <= 1e-5 for y in outputs[1:])


def test_rope_tells_attention_how_long_ago_a_token_came_and_without_it_attention_cannot():
    # kernel 1: each key depends on its own token only, so swapping two past tokens permutes the keys
    x = torch.randn(1, 30, C)
    swapped = x.clone()
    swapped[0, [5, 15]] = x[0, [15, 5]]
    change = {}
    for rope in (False, True):
        torch.manual_seed(0)
        mixer = AttentionMixer(C, kernel_size=1, layout="1d", causal=True, rope=rope)
        with torch.no_grad():
            change[rope] = relative(mixer(swapped)[0, -1], mixer(x)[0, -1])
    assert change[False] <= 1e-6  # a set of keys: order is invisible
    assert change[True] > 1e-3


def test_streaming_mistakes_are_one_sentence_errors():
    with pytest.raises(ValueError, match="only the causal 1-D"):
        build_mixer("conv", C, layout="2d").init_state(1)
    with pytest.raises(ValueError, match="only the causal 1-D SSM"):
        mixer = build_mixer("ssm", C, layout="1d", scan="bidi")
        mixer(torch.randn(1, 4, C), {"conv": torch.zeros(1, C, 6), "ssm": torch.zeros(1, C, 16)})
    with pytest.raises(UserError, match="window"):
        build_mixer("attn", C, layout="1d", window=4)
    with pytest.raises(UserError, match="rope=True gives sequence positions"):
        build_mixer("attn_causal", C, layout="2d", rope=True)
