"""The timm model contract: what timm, smp and torchvision wrappers rely on."""

import pytest
import torch
from timm.optim import param_groups_layer_decay

import mambaout
from mambaout.models.fuse import fuse_for_inference, is_fused, unfuse


@pytest.fixture(scope="module")
def femto():
    torch.manual_seed(0)
    return mambaout.create_model("mambaout_femto", num_classes=10).eval()


def test_forward_features_is_channels_last_stride_32(femto):
    assert femto.forward_features(torch.randn(2, 3, 96, 128)).shape == (2, 3, 4, 288)


def test_forward_head_pre_logits_gives_the_4x_hidden_features(femto):
    feats = femto.forward_features(torch.randn(2, 3, 64, 64))
    assert femto.forward_head(feats, pre_logits=True).shape == (2, 4 * 288)
    assert femto.forward_head(feats).shape == (2, 10)


def test_feature_info_channels_and_reductions(femto):
    assert [f["num_chs"] for f in femto.feature_info] == [48, 96, 192, 288]
    assert [f["reduction"] for f in femto.feature_info] == [4, 8, 16, 32]


def test_forward_intermediates_default_is_nchw_at_strides_4_to_32(femto):
    x = torch.randn(1, 3, 128, 96)
    final, feats = femto.forward_intermediates(x)
    assert [tuple(f.shape) for f in feats] == [(1, 48, 32, 24), (1, 96, 16, 12), (1, 192, 8, 6), (1, 288, 4, 3)]
    assert torch.equal(final, femto.forward_features(x))
    assert torch.equal(feats[-1], final.permute(0, 3, 1, 2))
    nhwc = femto.forward_intermediates(x, indices=[0, -1], output_fmt="NHWC", intermediates_only=True)
    assert [tuple(f.shape) for f in nhwc] == [(1, 32, 24, 48), (1, 4, 3, 288)]
    last2 = femto.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [f.shape[1] for f in last2] == [192, 288]
    early = femto.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
    assert torch.equal(early[0], feats[1])
    with pytest.raises(ValueError, match="out of range"):
        femto.forward_intermediates(x, indices=[4])


def test_prune_intermediate_layers_keeps_only_what_is_needed():
    model = mambaout.create_model("mambaout_pico").eval()
    x = torch.randn(1, 3, 64, 64)
    before = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert model.prune_intermediate_layers([0, 1]) == [0, 1]
    assert len(model.stages) == 2 and model.num_classes == 0
    after = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert model(x).shape == (1, 8, 8, 32)  # as timm: stage-2 features, no pooling, no head


def test_reset_classifier_changes_classes_and_keeps_the_mlp():
    model = mambaout.create_model("mambaout_pico")
    fc1 = model.head.pre_logits.fc.weight.clone()
    model.reset_classifier(7)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7) and torch.equal(model.head.pre_logits.fc.weight, fc1)
    model.reset_classifier(0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 384)


def test_backward_reaches_every_parameter_and_checkpointing_changes_nothing():
    torch.manual_seed(0)
    model = mambaout.create_model("mambaout_pico", num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    model(x).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).square().mean().backward()
    assert all(torch.allclose(p.grad, grads[n], atol=1e-7) for n, p in model.named_parameters())


@pytest.mark.usefixtures("fused_at_every_size")
def test_fused_inference_path_equals_the_reference_path(random_weights):
    for name in ("mambaout_pico", "mambaout_base_wide_rw"):  # GELU/paper head; SiLU/LayerScale/norm-first
        with torch.device("meta"):
            model = mambaout.create_model(name, num_classes=3)
        model = random_weights(model).eval()
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            fused = fuse_for_inference(model)(x)
            assert is_fused(model)
            ref = unfuse(model)(x)
        assert (fused - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()


def test_group_matcher_drives_timm_layer_decay():
    model = mambaout.create_model("mambaout_pico")
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.8)
    scales = sorted({g["lr_scale"] for g in groups})
    assert len(scales) >= 5 and scales[-1] == pytest.approx(1.0) and scales[0] < 0.5


def test_no_weight_decay_and_pretrained_cfg():
    model = mambaout.create_model("mambaout_tiny")
    assert model.no_weight_decay() == set()
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bicubic"
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert cfg["hf_hub_id"] == "timm/mambaout_tiny.in1k"


@pytest.mark.parametrize("size", [(32, 32), (160, 224), (97, 61)])
def test_any_resolution_channels_and_classes(size):
    model = mambaout.create_model("mambaout_pico", num_classes=4, in_chans=1, drop_rate=0.3).eval()
    assert model(torch.randn(1, 1, *size)).shape == (1, 4)
    assert model.head.drop.p == 0.3


def test_wrong_channel_count_is_one_clear_sentence():
    model = mambaout.create_model("mambaout_pico")
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 3, height, width\).*in_chans=1"):
        model(torch.randn(1, 1, 32, 32))
