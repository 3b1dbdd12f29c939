"""The dense backbone: stride-4..32 maps behind LayerNorms, classification weights loading, mixers passing through."""

import pytest
import torch

from mambaout import create_model
from mambaout.dense import MambaOutBackbone
from mambaout.measure.cost import count_params


def test_backbone_gives_normalised_maps_at_strides_4_8_16_32():
    backbone = MambaOutBackbone("mambaout_pico").eval()
    features = backbone(torch.randn(2, 3, 96, 128))
    assert [tuple(f.shape) for f in features] == [(2, 16, 24, 32), (2, 32, 12, 16), (2, 64, 6, 8), (2, 96, 3, 4)]
    assert backbone.out_channels == [16, 32, 64, 96] and backbone.strides == [4, 8, 16, 32]
    for f in features:  # a fresh LayerNorm over channels: zero mean, unit variance at every position
        assert f.mean(1).abs().max() < 1e-4
        assert (f.var(1, unbiased=False) - 1).abs().max() < 1e-2


def test_classification_weights_load_into_the_backbone_and_the_head_is_gone(tmp_path):
    classifier = create_model("mambaout_pico", num_classes=10)
    torch.save(classifier.state_dict(), tmp_path / "pico.pth")
    backbone = MambaOutBackbone("mambaout_pico", weights=tmp_path / "pico.pth")
    assert torch.equal(backbone.encoder.stem.conv1.weight, classifier.stem.conv1.weight)
    assert torch.equal(backbone.encoder.stages[3].blocks[0].fc2.weight, classifier.stages[3].blocks[0].fc2.weight)
    trunk = count_params(classifier) - count_params(classifier.head)
    norms = sum(2 * c for c in backbone.out_channels)
    assert count_params(backbone) == trunk + norms


def test_the_variants_drop_path_rate_is_the_default():
    rates = [
        b.drop_path.drop_prob for b in MambaOutBackbone("mambaout_pico", drop_path_rate=0.3).encoder.stages[3].blocks
    ]
    assert rates == [pytest.approx(0.3)]
    with torch.device("meta"):
        last = MambaOutBackbone("mambaout_tiny").encoder.stages[3].blocks[-1]
    assert last.drop_path.drop_prob == pytest.approx(0.2)  # MambaOut-Tiny's ImageNet peak rate


def test_the_studys_mixers_pass_through():
    backbone = MambaOutBackbone("mambaout_pico", mixer="attn").eval()
    assert all(hasattr(b, "mixer") for s in backbone.encoder.stages for b in s.blocks)
    assert [f.shape[1] for f in backbone(torch.randn(1, 3, 64, 64))] == [16, 32, 64, 96]
