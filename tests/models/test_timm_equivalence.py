"""Given the same weights, every variant's logits equal timm's own mambaout_* models to float32 precision."""

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
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = theirs(x)
        reference = ours(x)  # create_model gives the reference blocks
        fused = fuse_for_inference(ours)(x)
        assert is_fused(ours)
    scale = expected.abs().max().item()
    assert (reference - expected).abs().max().item() <= 1e-6 * scale
    assert (fused - expected).abs().max().item() <= 1e-5 * scale


def test_we_do_not_shadow_timm_registry():
    before = set(timm.list_models("mambaout*"))
    mambaout.create_model("mambaout_pico")
    assert set(timm.list_models("mambaout*")) == before and "mambaout_pico" not in before
