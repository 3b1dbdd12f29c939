"""The token mixers: what every comparison of the study relies on."""

import pytest
import torch
from timm.optim import create_optimizer_v2
from torch.utils.flop_counter import FlopCounterMode

import mambaout
from mambaout import UserError
from mambaout.measure.cost import count_macs, count_params
from mambaout.mixers import MIXERS, build_mixer, is_causal
from mambaout.mixers.local_conv import depthwise_conv2d, raster_causal_mask
from mambaout.ssm import scan_flops

C, H, W, L = 32, 6, 5, 30  # 32 channels -> 1 attention head, dt_rank 2


def _input(layout, batch=2):
    return torch.randn(batch, H, W, C) if layout == "2d" else torch.randn(batch, L, C)


@pytest.mark.parametrize("layout", ["2d", "1d"])
@pytest.mark.parametrize("name", MIXERS)
def test_every_mixer_keeps_the_shape_and_trains_every_parameter(name, layout):
    torch.manual_seed(0)
    mixer = build_mixer(name, C, kernel_size=5, layout=layout)
    x = _input(layout).requires_grad_()
    y = mixer(x)
    assert y.shape == x.shape
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad.abs().sum() > 0
    for n, p in mixer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


def _mixer_macs(name, layout, **kw):
    mixer = build_mixer(name, C, kernel_size=5, layout=layout, **kw)
    return count_params(mixer), count_macs(mixer, inputs=_input(layout, batch=1), include_norms=False)


def test_params_and_macs_of_each_mixer_follow_the_documented_formulas():
    T, N, R, k2 = H * W, 16, 2, 25  # tokens, d_state, dt_rank, 5x5 kernel taps
    conv_p, conv_m = C * k2 + C, C * k2 * T
    assert _mixer_macs("conv", "2d") == (conv_p, conv_m) == (832, 24000)
    # attention: + qkv and proj, + 2·C·T² MACs (q k^T and attn @ v), half of it causal
    attn_p, attn_m = conv_p + (3 * C * C + 3 * C) + (C * C + C), conv_m + T * C * 4 * C
    assert _mixer_macs("attn", "2d") == (attn_p, attn_m + 2 * C * T * T) == (5056, 204480)
    assert _mixer_macs("attn_causal", "2d") == (attn_p, attn_m + C * T * T)
    # SSM, per scan direction: x_proj (C -> R + 2N), dt_proj (R -> C, bias), A_log (C x N), D (C),
    # and the scan itself: scan_flops / 2 = (9·T·C·N + T·C) / 2 MACs
    ssm_p = C * (R + 2 * N) + (R * C + C) + C * N + C
    ssm_m = T * C * (R + 2 * N) + T * R * C + (9 * T * C * N + T * C) // 2
    assert scan_flops(1, C, T, N) // 2 == (9 * T * C * N + T * C) // 2
    for scan, directions in (("cross", 4), ("bidi", 2), ("causal", 1)):
        assert _mixer_macs("ssm", "2d", scan=scan) == (conv_p + directions * ssm_p, conv_m + directions * ssm_m)
    assert _mixer_macs("ssm", "2d") == (832 + 4 * 1728, 24000 + 4 * 104160)


def test_macs_of_sequence_mixers_use_the_sequence_length():
    k = 5
    assert _mixer_macs("conv", "1d")[1] == C * k * L
    assert _mixer_macs("attn_causal", "1d")[1] == C * k * L + L * C * 4 * C + C * L * L


def _perturb_after(x, layout, t):
    """A copy of x whose tokens after raster position t are replaced."""
    flat = x.clone().reshape(x.shape[0], -1, x.shape[-1])
    flat[:, t + 1 :] = torch.randn_like(flat[:, t + 1 :])
    return flat.reshape(x.shape)


CAUSAL = [
    ("conv", "1d", {}),
    ("ssm", "1d", {}),
    ("attn_causal", "1d", {}),
    ("attn_causal", "2d", {}),
    ("ssm", "2d", {"scan": "causal"}),
]
VISIBLE = [
    ("conv", "2d", {}),
    ("attn", "1d", {}),
    ("attn", "2d", {}),
    ("ssm", "2d", {}),
    ("ssm", "1d", {"scan": "bidi"}),
]


@pytest.mark.parametrize("name, layout, kw", CAUSAL)
def test_causal_mixers_never_look_at_later_tokens(name, layout, kw):
    torch.manual_seed(0)
    mixer = build_mixer(name, C, kernel_size=5, layout=layout, **kw)
    assert is_causal(name, layout, **kw)
    x = _input(layout)
    t = 12
    y1 = mixer(x).reshape(2, -1, C)
    y2 = mixer(_perturb_after(x, layout, t)).reshape(2, -1, C)
    assert torch.equal(y1[:, : t + 1], y2[:, : t + 1])  # bit-identical up to t
    assert (y1[:, t + 1 :] - y2[:, t + 1 :]).abs().max() > 1e-3


@pytest.mark.parametrize("name, layout, kw", VISIBLE)
def test_fully_visible_mixers_do_look_ahead(name, layout, kw):
    torch.manual_seed(0)
    mixer = build_mixer(name, C, kernel_size=5, layout=layout, **kw)
    assert not is_causal(name, layout, **kw)
    x = _input(layout)
    y1 = mixer(x).reshape(2, -1, C)
    y2 = mixer(_perturb_after(x, layout, 12)).reshape(2, -1, C)
    assert (y1[:, 12] - y2[:, 12]).abs().max() > 1e-4


def test_raster_causal_mask_keeps_rows_above_and_the_left_half_of_the_centre_row():
    assert raster_causal_mask(3).tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 2), (3, 3), (2, 5), (4, 4), (8, 8)])
def test_a_depthwise_conv_on_a_small_map_runs_only_the_taps_that_meet_it(rows, cols):
    torch.manual_seed(0)
    x0, w0, b0, grad = (
        torch.randn(4, 8, rows, cols),
        torch.randn(8, 1, 7, 7),
        torch.randn(8),
        torch.randn(4, 8, rows, cols),
    )
    runs = []
    for conv in (depthwise_conv2d, lambda x, w, b: torch.nn.functional.conv2d(x, w, b, padding=3, groups=8)):
        x, w, b = (t.clone().requires_grad_(True) for t in (x0, w0, b0))
        y = conv(x, w, b)
        (y * grad).sum().backward()
        runs.append((y, x.grad, w.grad, b.grad))
    for cropped, full in zip(*runs):  # outputs and every gradient as with the whole 7 x 7 kernel (within the float32
        # rounding of the weight gradient's kernel, `depthwise_grad.py`, which sums in another order than oneDNN)
        torch.testing.assert_close(cropped, full, rtol=1e-5, atol=1e-5 * full.abs().max().item())
    reach_r, reach_c = min(3, max(rows - 1, 1)), min(3, max(cols - 1, 1))
    kept = torch.zeros(7, 7, dtype=torch.bool)
    kept[3 - reach_r : 4 + reach_r, 3 - reach_c : 4 + reach_c] = True
    assert torch.all(runs[0][2][:, 0][:, ~kept] == 0)  # the taps left out only ever met padding
    with FlopCounterMode(display=False) as counter:  # what runs is what is counted
        depthwise_conv2d(x0, w0, b0)
    assert counter.get_total_flops() == 2 * 4 * 8 * rows * cols * kept.sum().item()


def test_cross_scan_is_the_sum_of_the_four_directional_scans():
    torch.manual_seed(0)
    mixer = build_mixer("ssm", C, kernel_size=5, scan="cross")
    x = torch.randn(2, H, W, C)
    u = mixer.act(mixer.conv(x))
    rows = u.reshape(2, H * W, C)
    cols = u.transpose(1, 2).reshape(2, W * H, C)
    s = mixer.ssms
    by_hand = (
        s[0](rows).reshape(2, H, W, C)
        + s[1](cols).reshape(2, W, H, C).transpose(1, 2)
        + s[2](rows.flip(1)).flip(1).reshape(2, H, W, C)
        + s[3](cols.flip(1)).flip(1).reshape(2, W, H, C).transpose(1, 2)
    )
    torch.testing.assert_close(mixer(x), by_hand, rtol=1e-5, atol=1e-6)
    assert mixer.directions == ("row", "col", "row_rev", "col_rev")


def test_ssm_parameters_stay_fp32_and_out_of_weight_decay():
    model = mambaout.create_model("mambaout_pico", num_classes=10, mixer="ssm")
    no_wd = model.no_weight_decay()
    assert len(no_wd) == 2 * 4 * 6  # A_log and D, 4 directions, 6 blocks
    assert all(n.endswith(("A_log", "D")) for n in no_wd)
    assert {named.dtype for n, named in model.named_parameters() if n in no_wd} == {torch.float32}
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    named = dict(model.named_parameters())
    assert all(id(named[n]) in no_decay for n in no_wd)


def test_ssm_init_weights_restores_the_delta_bias_after_a_network_wide_init():
    mixer = build_mixer("ssm", 64, scan="causal", layout="1d")
    dt_bias = mixer.ssms[0].dt_proj.bias
    torch.nn.init.zeros_(dt_bias)  # what MambaOut's init of every Linear does
    mixer.init_weights()
    dt = torch.nn.functional.softplus(dt_bias)
    assert 1e-3 * 0.99 <= dt.min() and dt.max() <= 1e-1 * 1.01


@pytest.mark.parametrize("mixer", ["ssm", "attn", "attn_causal"])
def test_mambaout_with_each_mixer_trains_every_parameter(mixer):
    torch.manual_seed(0)
    name = "mambaout_femto" if mixer == "ssm" else "mambaout_pico"
    model = mambaout.create_model(name, num_classes=5, mixer=mixer)
    model(torch.randn(2, 3, 64, 64)).logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_model_macs_add_each_mixers_formula_on_top_of_the_conv_model():
    size, base = 64, mambaout.create_model("mambaout_pico", num_classes=10)
    base_macs = count_macs(base, (1, 3, size, size))
    conv_per_block = {}
    for s, (depth, dim) in enumerate(zip((1, 1, 3, 1), (16, 32, 64, 96))):
        side = size // 4 // 2**s
        conv_per_block[s] = (depth, dim, side * side)
    for mixer in ("attn", "attn_causal"):
        model = mambaout.create_model("mambaout_pico", num_classes=10, mixer=mixer)
        extra = sum(
            depth * (T * dim * 4 * dim + (2 if mixer == "attn" else 1) * dim * T * T)  # qkv+proj, attention
            for depth, dim, T in conv_per_block.values()
        )
        # the mixer's conv is the same kxk depthwise conv, its act and the projections' biases are free
        assert count_macs(model, (1, 3, size, size)) == base_macs + extra
        assert count_params(model) == count_params(base) + sum(
            depth * (4 * dim * dim + 4 * dim) for depth, dim, _ in conv_per_block.values()
        )


def test_unknown_mixer_or_scan_is_a_one_sentence_user_error():
    with pytest.raises(UserError, match="unknown mixer 'mamba'"):
        build_mixer("mamba", 32)
    with pytest.raises(UserError, match="scan='cross' is not available for layout '1d'"):
        build_mixer("ssm", 32, layout="1d", scan="cross")
