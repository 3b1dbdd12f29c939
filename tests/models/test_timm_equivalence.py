"""Given the same weights, every variant's logits equal timm's own mambaout_* models to float32 precision: measured
against timm's model run in float64, ours (reference and fused blocks) is as close as timm's own float32 result.

Two float32 computations of the same network differ by their rounding, ~1e-6 of the logits' scale here (timm's float32
logits against its float64 ones, every variant, 64 x 64 inputs), by an amount that moves with the CPU's kernels, so a
fixed bound of that size passes or fails by CPU. Ours differs from the float64 logits by 0.8-1.5x what timm's float32
does (six inputs, every variant, one and two threads, PyTorch and oneDNN capped at AVX2 and not, 2-core AMD EPYC):
2.5x bounds it with margin. A term left out of one block's arithmetic misses it by orders of magnitude (the last
block's norm bias: 4,500-16,000x timm's error; its fc2 bias: 120,000x+), a norm's eps of 1e-4 for 1e-6 by 4-10x; eps
1e-5 stays within float32's rounding.
"""

import copy

import pytest
import timm
import torch

import mambaout
from mambaout.models.fuse import fuse_for_inference, is_fused

TIMM_VARIANTS = [n for n in mambaout.list_models() if n != "mambaout_pico"]


@pytest.mark.usefixtures("fused_at_every_size")
@pytest.mark.parametrize("name", TIMM_VARIANTS)
def test_logits_equal_timm_for_the_same_weights(name, random_weights):
    with torch.device("meta"):  # random weights without the slow init; LayerScale gammas ~1 so a wrong fold shows
        theirs = timm.create_model(name)
        ours = mambaout.create_model(name)
    theirs = random_weights(theirs).eval()
    ours.load_state_dict(theirs.state_dict(), assign=True)  # names identical: no remapping
    ours.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact = copy.deepcopy(theirs).double()(x.double())
        theirs_error = (theirs(x).double() - exact).abs().max().item()
        reference = ours(x)  # create_model gives the reference blocks
        fused = fuse_for_inference(ours)(x)
        assert is_fused(ours)
    assert 0 < theirs_error <= 3e-6 * exact.abs().max().item()  # float32's rounding, not a different network
    assert (reference.double() - exact).abs().max().item() <= 2.5 * theirs_error
    assert (fused.double() - exact).abs().max().item() <= 2.5 * theirs_error


def test_we_do_not_shadow_timm_registry():
    before = set(timm.list_models("mambaout*"))
    mambaout.create_model("mambaout_pico")
    assert set(timm.list_models("mambaout*")) == before and "mambaout_pico" not in before
