"""The variant table reproduces the paper: parameters and MACs at 224x224 as printed in Table 1."""

import pytest
import torch

import mambaout
from mambaout.measure.cost import count_macs, count_params
from mambaout.models.variants import VARIANTS

PAPER = {  # name: (params M, GMACs, top-1) as printed in the paper
    "mambaout_femto": (7.3, 1.2, 78.9),
    "mambaout_kobe": (9.1, 1.5, 80.0),
    "mambaout_tiny": (26.5, 4.5, 82.7),
    "mambaout_small": (48.5, 9.0, 84.1),
    "mambaout_base": (84.8, 15.8, 84.2),
}
# conv + matmul MACs alone (torch.utils.flop_counter), PAPER.md §2 "measured"
CONV_MATMUL_GMACS = {
    "mambaout_femto": 1.15,
    "mambaout_kobe": 1.51,
    "mambaout_tiny": 4.47,
    "mambaout_small": 8.94,
    "mambaout_base": 15.79,
}


@pytest.mark.parametrize("name", list(PAPER))
def test_params_and_macs_equal_the_paper_table_as_printed(name):
    with torch.device("meta"):  # shapes are all that counting needs
        model = mambaout.create_model(name)
    params = count_params(model)
    macs = count_macs(model, (1, 3, 224, 224))
    assert round(params / 1e6, 1) == PAPER[name][0]
    assert round(macs / 1e9, 1) == PAPER[name][1]
    assert round(count_macs(model, (1, 3, 224, 224), include_norms=False) / 1e9, 2) == CONV_MATMUL_GMACS[name]
    assert VARIANTS[name].params_m == PAPER[name][0] and VARIANTS[name].top1 == PAPER[name][2]


def test_rw_variants_follow_the_timm_table():
    arch = {n: VARIANTS[n].arch for n in VARIANTS if n.endswith("_rw")}
    assert arch["mambaout_base_short_rw"]["depths"] == (3, 3, 25, 3)
    assert arch["mambaout_base_tall_rw"]["expansion_ratio"] == 2.5
    assert arch["mambaout_base_wide_rw"]["act"] == "silu" and arch["mambaout_base_plus_rw"]["conv_ratio"] == 1.5
    assert all(
        a["downsample"] == "conv_nf" and a["ls_init_value"] == 1e-6 and not a["stem_mid_norm"] for a in arch.values()
    )


def test_paper_drop_path_rates_are_in_the_table():
    assert [VARIANTS[n].drop_path for n in PAPER] == [0.025, 0.025, 0.2, 0.4, 0.6]


def test_drop_path_rises_linearly_over_all_blocks():
    model = mambaout.create_model("mambaout_femto", drop_path_rate=0.2)
    rates = [
        b.drop_path.drop_prob if hasattr(b.drop_path, "drop_prob") else 0.0 for s in model.stages for b in s.blocks
    ]
    assert len(rates) == 18
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
    assert rates == pytest.approx([0.2 * i / 17 for i in range(18)])


def test_init_is_truncated_normal_002_with_zero_bias():
    model = mambaout.create_model("mambaout_tiny")
    w = model.stages[2].blocks[0].fc1.weight
    assert w.std().item() == pytest.approx(0.02, rel=0.05) and w.abs().max().item() <= 2.0
    assert model.stages[2].blocks[0].fc1.bias.abs().max().item() == 0.0
    assert model.stem.conv1.bias.abs().max().item() == 0.0


def test_block_widths_follow_the_paper():
    block = mambaout.create_model("mambaout_tiny").stages[0].blocks[0]
    assert block.fc1.out_features == 2 * int(8 / 3 * 96) == 512
    assert block.split_indices == (256, 256 - 96, 96)
    assert block.conv.kernel_size == (7, 7) and block.conv.groups == 96 and block.conv.bias is not None
