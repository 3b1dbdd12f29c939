"""Mamba and SelectiveSSM: mamba_ssm's names and inits, causal full-sequence forward equal to token-by-token steps."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mambaout.ssm import Mamba, SelectiveSSM, selective_scan_ref

# mamba_ssm.modules.mamba_simple.Mamba(d_model=16).named_parameters(), in order, with shapes
MAMBA_SSM_PARAMETERS = [
    ("A_log", (32, 16)),
    ("D", (32,)),
    ("in_proj.weight", (64, 16)),
    ("conv1d.weight", (32, 1, 4)),
    ("conv1d.bias", (32,)),
    ("x_proj.weight", (1 + 2 * 16, 32)),
    ("dt_proj.weight", (32, 1)),
    ("dt_proj.bias", (32,)),
    ("out_proj.weight", (16, 32)),
]


def test_parameter_names_shapes_and_order_are_mamba_ssm_s():
    block = Mamba(d_model=16)
    assert [(name, tuple(p.shape)) for name, p in block.named_parameters()] == MAMBA_SSM_PARAMETERS
    assert list(block.state_dict()) == [name for name, _ in MAMBA_SSM_PARAMETERS]


class MambaSsmLayout(nn.Module):
    """Parameters declared as mamba_ssm/modules/mamba_simple.py declares them, for d_model 16 (d_inner 32, N 16)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_proj = nn.Linear(16, 64, bias=False)
        self.conv1d = nn.Conv1d(32, 32, 4, groups=32, padding=3)
        self.x_proj = nn.Linear(32, 1 + 2 * 16, bias=False)
        self.dt_proj = nn.Linear(1, 32)
        self.A_log = nn.Parameter(torch.randn(32, 16) * 0.5)
        self.D = nn.Parameter(torch.randn(32))
        self.out_proj = nn.Linear(32, 16, bias=False)


def mamba_forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """mamba_ssm's Mamba.forward (the path without its CUDA kernels) on a state_dict, with the reference scan."""
    seqlen = x.shape[1]
    u, z = F.linear(x, p["in_proj.weight"]).transpose(1, 2).chunk(2, dim=1)  # (batch, 32, L) each
    u = F.silu(F.conv1d(u, p["conv1d.weight"], p["conv1d.bias"], padding=3, groups=32)[..., :seqlen])
    dt, B, C = torch.split(F.linear(u.transpose(1, 2), p["x_proj.weight"]), [1, 16, 16], dim=-1)
    dt = F.linear(dt, p["dt_proj.weight"]).transpose(1, 2)
    A = -torch.exp(p["A_log"])
    y = selective_scan_ref(u, dt, A, B.mT, C.mT, p["D"], z, p["dt_proj.bias"], delta_softplus=True)
    return F.linear(y.transpose(1, 2), p["out_proj.weight"])


def test_a_state_dict_in_mamba_ssm_s_layout_loads_with_keys_in_order_and_computes_its_forward():
    torch.manual_seed(0)
    theirs = MambaSsmLayout().state_dict()
    block = Mamba(16)
    assert list(block.state_dict()) == list(theirs)
    block.load_state_dict(theirs)  # strict: same names, same shapes
    assert all(torch.equal(block.state_dict()[k], v) for k, v in theirs.items())
    x = torch.randn(2, 12, 16)
    expected = mamba_forward(theirs, x)
    assert (block(x) - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_positional_arguments_follow_mamba_ssm_s_constructor():
    # d_model, d_state, d_conv, expand, dt_rank, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, conv_bias, bias,
    # use_fast_path, layer_idx
    block = Mamba(16, 8, 3, 3, 2, 0.001, 0.1, "constant", 0.5, 1e-4, False, True, False, 7)
    assert block.in_proj.weight.shape == (96, 16) and block.in_proj.bias is not None  # expand 3, bias
    assert block.conv1d.weight.shape == (48, 1, 3) and block.conv1d.bias is None  # d_conv 3, no conv bias
    assert block.x_proj.weight.shape == (2 + 2 * 8, 48) and block.A_log.shape == (48, 8)  # dt_rank 2, d_state 8
    assert torch.equal(block.dt_proj.weight, torch.full((48, 2), 0.5 * 2**-0.5))  # constant init, dt_scale 0.5
    assert block.use_fast_path is False and block.backend == "torch" and block.layer_idx == 7


def test_use_fast_path_picks_the_fused_kernel_and_false_the_torch_scan_with_the_same_output():
    torch.manual_seed(0)
    fast, plain = Mamba(16), Mamba(16, use_fast_path=False)
    plain.load_state_dict(fast.state_dict())
    assert fast.backend == "auto" and plain.backend == "torch"
    assert Mamba(16, use_fast_path=False, backend="numba").backend == "numba"  # an explicit backend wins
    x = torch.randn(2, 40, 16)
    y = fast(x)
    assert (plain(x) - y).abs().max() <= 1e-5 * y.abs().max()


def test_mamba_runs_the_selective_ssm_on_its_own_parameters_between_conv_and_out_proj():
    torch.manual_seed(0)
    block = Mamba(16)
    ssm = SelectiveSSM(32, dt_rank=1)
    ssm.load_state_dict({k: v for k, v in block.state_dict().items() if k in ssm.state_dict()})  # strict
    x = torch.randn(2, 12, 16)
    u, z = block.in_proj(x).chunk(2, dim=-1)
    u = block.act(block.conv1d(u.transpose(1, 2))[..., :12]).transpose(1, 2)
    assert torch.equal(block(x), block.out_proj(ssm(u, z)))
    assert not isinstance(block, SelectiveSSM)  # composed: each module owns its parameters


def test_a_mamba_state_dict_loads_into_a_fresh_block_and_gives_the_same_output():
    torch.manual_seed(0)
    block, other = Mamba(d_model=16), Mamba(d_model=16)
    other.load_state_dict(block.state_dict())
    x = torch.randn(2, 9, 16)
    assert torch.equal(block(x), other(x))


def test_output_has_the_input_shape_and_dtype():
    block = Mamba(d_model=24, d_state=8, expand=2)
    x = torch.randn(3, 17, 24)
    y = block(x)
    assert y.shape == (3, 17, 24) and y.dtype == torch.float32
    assert y.abs().max() > 0


def test_a_log_is_s4d_real_and_stays_float32_outside_weight_decay():
    block = Mamba(d_model=16, d_state=6, dtype=torch.bfloat16)
    expected = torch.log(torch.arange(1, 7, dtype=torch.float32)).expand(32, 6)
    assert block.A_log.dtype == torch.float32 and torch.equal(block.A_log, expected)
    assert block.D.dtype == torch.float32 and torch.equal(block.D, torch.ones(32))
    assert block.A_log._no_weight_decay is True and block.D._no_weight_decay is True
    assert block.in_proj.weight.dtype == torch.bfloat16


def test_dt_bias_is_inverse_softplus_of_a_log_uniform_step_in_range():
    torch.manual_seed(0)
    ssm = SelectiveSSM(4096, dt_min=0.002, dt_max=0.05)
    dt = F.softplus(ssm.dt_proj.bias.double())
    assert dt.min() >= 0.002 * (1 - 1e-5) and dt.max() <= 0.05 * (1 + 1e-5)
    # log-uniform: the mean of log(dt) sits half way between log(dt_min) and log(dt_max)
    assert abs(dt.log().mean().item() - (math.log(0.002) + math.log(0.05)) / 2) < 0.05
    assert ssm.dt_proj.weight.abs().max() <= ssm.dt_rank**-0.5


def test_stepping_token_by_token_equals_the_full_sequence_forward():
    torch.manual_seed(0)
    block = Mamba(d_model=16, d_state=8)
    x = torch.randn(2, 21, 16)
    full = block(x)
    conv_state, ssm_state = block.allocate_inference_cache(batch_size=2)
    steps = [block.step(x[:, t : t + 1], conv_state, ssm_state)[0] for t in range(21)]
    assert conv_state.shape == (2, 32, 4) and ssm_state.shape == (2, 32, 8)  # constant size, whatever the length
    assert (torch.cat(steps, dim=1) - full).abs().max() <= 1e-5


def test_mamba_is_causal():
    torch.manual_seed(0)
    block = Mamba(d_model=16)
    x = torch.randn(1, 30, 16)
    changed = x.clone()
    changed[:, 12:] += 1.0
    y, y_changed = block(x), block(changed)
    assert torch.equal(y[:, :12], y_changed[:, :12])
    assert (y[:, 12:] - y_changed[:, 12:]).abs().max() > 1e-3


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    block = Mamba(d_model=16)
    block(torch.randn(2, 10, 16)).square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name


@pytest.mark.parametrize("backend", ["torch", "ref"])
def test_backends_agree_inside_the_block(backend):
    torch.manual_seed(0)
    block = Mamba(d_model=16)
    x = torch.randn(2, 70, 16, requires_grad=True)
    fused = block(x)
    (grad_fused,) = torch.autograd.grad(fused.sum(), x)
    block.backend = backend
    other = block(x)
    (grad_other,) = torch.autograd.grad(other.sum(), x)
    assert (other - fused).abs().max() <= 1e-5 * fused.abs().max()
    assert (grad_other - grad_fused).abs().max() <= 1e-5 * grad_fused.abs().max()


def test_selective_ssm_scans_forward_and_a_flipped_call_scans_backward():
    torch.manual_seed(0)
    ssm = SelectiveSSM(12, d_state=4)
    x = torch.randn(2, 20, 12)
    changed = x.clone()
    changed[:, 7] += 1.0
    forward_diff = (ssm(x) - ssm(changed)).abs().amax(dim=(0, 2))
    backward_diff = (ssm(x.flip(1)).flip(1) - ssm(changed.flip(1)).flip(1)).abs().amax(dim=(0, 2))
    assert forward_diff[:7].max() == 0 and forward_diff[7:].min() > 0  # step 7 reaches 7 and later
    assert backward_diff[8:].max() == 0 and backward_diff[:8].min() > 0  # flipped: 7 and earlier


def test_selective_ssm_step_and_last_state_match_forward():
    torch.manual_seed(0)
    ssm = SelectiveSSM(12, d_state=4)
    x, z = torch.randn(2, 15, 12), torch.randn(2, 15, 12)
    y, last_state = ssm(x, z, return_last_state=True)
    state = torch.zeros(2, 12, 4)
    steps = torch.stack([ssm.step(x[:, t], state, z[:, t]) for t in range(15)], dim=1)
    assert (steps - y).abs().max() <= 1e-5
    assert (state - last_state).abs().max() <= 1e-5


def test_step_rejects_more_than_one_token():
    block = Mamba(d_model=16)
    conv_state, ssm_state = block.allocate_inference_cache(1)
    with pytest.raises(ValueError, match="one token"):
        block.step(torch.randn(1, 2, 16), conv_state, ssm_state)


def test_selective_ssm_in_chunks_from_the_carried_state_equals_one_pass_with_the_same_gradients():
    torch.manual_seed(0)
    ssm = SelectiveSSM(12, d_state=4)
    x, z = torch.randn(2, 90, 12, requires_grad=True), torch.randn(2, 90, 12)
    whole, whole_last = ssm(x, z, return_last_state=True)
    ys, state = [], None
    for start, end in ((0, 1), (1, 64), (64, 70), (70, 90)):  # one token, across the fused block, the rest
        y, state = ssm(x[:, start:end], z[:, start:end], return_last_state=True, initial_state=state)
        ys.append(y)
    chunked = torch.cat(ys, dim=1)
    assert (chunked - whole).abs().max() <= 1e-6 * whole.abs().max()
    assert (state - whole_last).abs().max() <= 1e-6 * whole_last.abs().max()
    weight = torch.randn_like(whole)
    grads_whole = torch.autograd.grad((whole * weight).sum(), [x, *ssm.parameters()])
    grads_chunked = torch.autograd.grad((chunked * weight).sum(), [x, *ssm.parameters()])
    for g_whole, g_chunked in zip(grads_whole, grads_chunked):
        assert (g_chunked - g_whole).abs().max() <= 1e-5 * g_whole.abs().max()


def test_mamba_stream_in_chunks_in_steps_or_whole_gives_one_output_and_one_state():
    torch.manual_seed(0)
    block = Mamba(d_model=16, d_state=8)
    x = torch.randn(2, 40, 16)
    whole = block(x)
    state = block.allocate_inference_cache(batch_size=2)
    ys = []
    for start, end in ((0, 2), (2, 3), (3, 25), (25, 40)):  # chunks shorter than the conv (d_conv 4) too
        y, state = block(x[:, start:end], state=state)
        ys.append(y)
    assert (torch.cat(ys, dim=1) - whole).abs().max() <= 1e-5 * whole.abs().max()
    conv_state, ssm_state = block.allocate_inference_cache(batch_size=2)
    steps = [block.step(x[:, t : t + 1], conv_state, ssm_state)[0] for t in range(40)]
    assert (torch.cat(steps, dim=1) - whole).abs().max() <= 1e-5 * whole.abs().max()
    # the last d_conv inputs, in step's layout (in_proj of one token and of a chunk round differently: 1e-6)
    assert (state[0] - conv_state).abs().max() <= 1e-6 * conv_state.abs().max()
    assert (state[1] - ssm_state).abs().max() <= 1e-5 * ssm_state.abs().max()
    # a stream may switch between chunks and steps: a chunk's state feeds step, and step's state a chunk
    more = torch.randn(2, 6, 16)
    y_chunk, _ = block(more, state=state)
    y_steps = torch.cat([block.step(more[:, t : t + 1], conv_state, ssm_state)[0] for t in range(6)], dim=1)
    assert (y_chunk - y_steps).abs().max() <= 1e-5 * y_steps.abs().max()


def test_mamba_gradients_flow_through_the_carried_state_into_the_previous_chunk():
    torch.manual_seed(0)
    block = Mamba(d_model=16, d_state=8)
    x = torch.randn(1, 30, 16, requires_grad=True)
    weight = torch.randn(1, 30, 16)
    (grad_whole,) = torch.autograd.grad((block(x) * weight).sum(), x)
    y1, state = block(x[:, :12], state=block.allocate_inference_cache(1))
    y2, _ = block(x[:, 12:], state=state)
    (grad_chunked,) = torch.autograd.grad((torch.cat([y1, y2], 1) * weight).sum(), x)
    assert (grad_chunked - grad_whole).abs().max() <= 1e-5 * grad_whole.abs().max()
    assert grad_whole[:, :12].abs().max() > 1e-3  # the second chunk's loss does reach the first chunk
