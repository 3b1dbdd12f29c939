"""The exportable scan is the selective scan: same outputs as the reference loop, up to its stated length."""

import torch

from mambaout.export.graph import exportable
from mambaout.export.scan import UnrolledSSMMixer
from mambaout.mixers.ssm import SSMMixer
from mambaout.models import create_model
from mambaout.models.mambaout import GatedCNNBlock
from mambaout.ssm import selective_scan
from mambaout.ssm.unrolled import rounds_for, selective_scan_unrolled


def _inputs(length: int, groups: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u, delta = torch.randn(2, 8, length, generator=g), torch.randn(2, 8, length, generator=g)
    A = -torch.rand(8, 4, generator=g) * 3
    B, C = torch.randn(2, groups, 4, length, generator=g), torch.randn(2, groups, 4, length, generator=g)
    D, bias = torch.randn(8, generator=g), torch.randn(8, generator=g)
    return u, delta, A, B, C, D, bias


def _relative(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_rounds_cover_the_longest_sequence():
    assert [rounds_for(n) for n in (1, 2, 3, 64, 65, 256 * 256)] == [1, 1, 2, 6, 7, 16]


def test_unrolled_scan_equals_the_reference_loop_for_every_length_up_to_its_limit():
    for length in (1, 5, 37, 64):
        u, delta, A, B, C, D, bias = _inputs(length)
        ref = selective_scan(u, delta, A, B, C, D, delta_bias=bias, delta_softplus=True, backend="ref")
        ours = selective_scan_unrolled(u, delta, A, B, C, D, delta_bias=bias, delta_softplus=True, rounds=6)
        assert _relative(ours, ref) < 1e-5, length


def test_unrolled_scan_is_wrong_past_its_limit_which_is_why_the_exporter_sizes_it():
    u, delta, A, B, C, D, bias = _inputs(200)
    delta = delta.abs() * 0.01 - 5  # tiny steps: the state remembers far back, so missing history shows
    ref = selective_scan(u, delta, A, B, C, D, delta_bias=bias, delta_softplus=True, backend="ref")
    short = selective_scan_unrolled(u, delta, A, B, C, D, delta_bias=bias, delta_softplus=True, rounds=4)
    assert _relative(short, ref) > 1e-3


def test_exportable_model_gives_the_same_outputs_and_is_restored_afterwards():
    torch.manual_seed(0)
    model = create_model("mambaout_pico", num_classes=10, mixer="ssm").train()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model.eval()(x)
    model.train()
    with exportable(model, max_tokens=256) as graph:
        assert not model.training
        assert sum(isinstance(m, UnrolledSSMMixer) for m in graph.modules()) == 6  # pico: 1 + 1 + 3 + 1 blocks
        got = graph(x)
    assert _relative(got, expected) < 1e-5
    assert model.training
    assert sum(isinstance(m, UnrolledSSMMixer) for m in model.modules()) == 0
    assert sum(isinstance(m, SSMMixer) for m in model.modules()) == 6
    assert not any("forward" in vars(m) for m in model.modules())  # the blocks' export form is gone too


def test_nested_exportable_restores_the_model_at_each_exit():
    model = create_model("mambaout_pico", num_classes=10).eval()
    with exportable(model), exportable(model.stages[0]):
        pass
    with exportable(model):
        with exportable(model):
            pass
        assert all("forward" in vars(m) for m in model.modules() if isinstance(m, GatedCNNBlock))
    assert not any("forward" in vars(m) for m in model.modules())
