"""Every variant passes what timm's own tests/test_models.py asks of timm's `mambaout_*` models.

timm's checks, per model: forward (and grad checkpointing changes nothing), backward reaches every parameter, the
default cfg agrees with the model (pool size, feature widths, classifier and first-conv names, resets), features and
`forward_intermediates` follow `feature_info`, `torch.jit.script`, `torch.fx` tracing (plain and timm's feature
extractor, forward and backward, and the traced graph scripted), and models built with `device=`/`dtype=`.

Tests use each variant's row with one block per stage (`depths=(1, 1, 1, 1)`: the widths, ratios, activation,
downsampling, LayerScale and head of the row) at 64-96 px; those that need 224x224 or the full variant (its cfg, its
tensors' device and dtype) run on the meta device, where only shapes are computed.
"""

import math

import pytest
import timm
import torch
from timm.layers import get_channel_dim, get_spatial_dim
from timm.models import FeatureInfo
from timm.models._features import FeatureGetterNet
from timm.models._features_fx import create_feature_extractor, get_graph_node_names

import mambaout
from mambaout.models.variants import VARIANTS

ALL = mambaout.list_models()
TIMM = [n for n in ALL if n in timm.list_models("mambaout*")]


def small(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return mambaout.create_model(name, depths=(1, 1, 1, 1), **kwargs)


def on_meta(name: str, **kwargs) -> torch.nn.Module:
    return mambaout.create_model(name, device="meta", **kwargs).eval()


def test_the_suite_covers_every_variant_and_timm_has_all_but_pico():
    assert len(ALL) == 11 and set(ALL) - set(TIMM) == {"mambaout_pico"}


@pytest.mark.parametrize("name", ALL)
def test_forward_is_finite_and_grad_checkpointing_changes_nothing(name):
    model = small(name).eval()
    x = torch.randn(1, 3, 64, 64)
    out = model(x)
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
    model.set_grad_checkpointing()
    assert torch.allclose(model(x), out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_backward_reaches_every_parameter(name):
    model = small(name, num_classes=42).train()
    out = model(torch.randn(2, 3, 64, 64))
    out.mean().backward()
    params = dict(model.named_parameters())
    assert out.shape == (2, 42) and torch.isfinite(out).all()
    assert [n for n, p in params.items() if p.grad is None or p.grad.abs().sum() == 0] == []
    assert sum(p.grad.numel() for p in params.values()) == sum(p.numel() for p in params.values())


@pytest.mark.parametrize("name", ALL)
def test_default_cfg_agrees_with_the_model(name):
    model = on_meta(name, depths=(1, 1, 1, 1))  # the output sizes depend on the strides, not on the depth
    cfg, dims = model.default_cfg, VARIANTS[name].arch["dims"]
    assert model.default_cfg is model.pretrained_cfg
    assert (model.num_classes, model.num_features, model.head_hidden_size) == (1000, dims[-1], 4 * dims[-1])
    x = torch.randn(1, *cfg["input_size"], device="meta")
    spatial, channels = get_spatial_dim(model.output_fmt), get_channel_dim(model.output_fmt)
    features = model.forward_features(x)
    pre_logits = model.forward_head(features, pre_logits=True)
    assert tuple(features.shape[d] for d in spatial) == cfg["pool_size"] == (7, 7)
    assert features.shape[channels] == model.num_features and pre_logits.shape == (1, model.head_hidden_size)
    keys = model.state_dict().keys()
    assert f"{cfg['first_conv']}.weight" in keys and f"{cfg['classifier']}.weight" in keys
    model.reset_classifier(0)
    assert model.num_classes == 0 and model(x).shape == pre_logits.shape
    model.reset_classifier(0, "")
    unpooled = model(x)
    assert unpooled.ndim == 4 and tuple(unpooled.shape[d] for d in spatial) == cfg["pool_size"]
    bare = on_meta(name, depths=(1, 1, 1, 1), num_classes=0, global_pool="")
    assert tuple(bare(x).shape[d] for d in spatial) == cfg["pool_size"]


@pytest.mark.parametrize("name", TIMM)
def test_pretrained_cfg_equals_timms(name):
    with torch.device("meta"):
        theirs = timm.create_model(name, pretrained=False).pretrained_cfg
    ours = on_meta(name).pretrained_cfg
    assert ours == theirs
    if name.startswith("mambaout_base_") and name != "mambaout_base_plus_rw":
        assert (ours["crop_pct"], ours["test_crop_pct"]) == (0.95, 1.0)


def test_pico_cfg_is_the_paper_models_with_its_own_name():
    pico, femto = on_meta("mambaout_pico").pretrained_cfg, on_meta("mambaout_femto").pretrained_cfg
    assert {k: v for k, v in pico.items() if pico[k] != femto[k]} == {
        "architecture": "mambaout_pico",
        "hf_hub_id": "timm/mambaout_pico.in1k",
    }


@pytest.mark.parametrize("name", ALL)
def test_forward_intermediates_and_features_follow_feature_info(name):
    model = small(name).eval()
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    assert info.channels() == list(VARIANTS[name].arch["dims"]) and info.reduction() == [4, 8, 16, 32]
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x, output_fmt="NCHW")
        for c, r, t in zip(info.channels(), info.reduction(), intermediates, strict=True):
            assert t.shape[:2] == (1, c) and max(t.shape[2:]) <= math.ceil(96 / r) + 1
        assert torch.allclose(final, model.forward_features(x))
        model.set_grad_checkpointing()
        assert torch.allclose(model.forward_intermediates(x)[0], final, rtol=1e-4, atol=1e-5)
        getter = FeatureGetterNet(small(name).eval(), out_indices=(0, 1, 2, 3))  # timm's features_only="getter"
        assert [t.shape[1] for t in getter(x)] == getter.feature_info.channels() == info.channels()


@pytest.mark.parametrize("name", ALL)
def test_torchscript_gives_the_eager_logits(name):
    model = small(name).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        eager = model(x)
        scripted = torch.jit.script(model)(x)
    assert (scripted - eager).abs().max().item() <= 1e-6 * eager.abs().max().item()


@pytest.mark.parametrize("name", ALL)
def test_fx_tracing_gives_the_eager_logits_and_scripts(name):
    model = small(name).eval()
    x = torch.randn(1, 3, 64, 64)
    _, eval_nodes = get_graph_node_names(model)
    with torch.inference_mode():
        eager = model(x)
        traced = torch.fx.symbolic_trace(model)
        extractor = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])  # timm's tracer settings
        assert torch.equal(traced(x), eager)
        assert torch.equal(next(iter(extractor(x).values())), eager)
        assert torch.equal(torch.jit.script(extractor)(x)[eval_nodes[-1]], eager)
    with pytest.raises(ValueError, match="in_chans=1"):  # the input check survives tracing, as a graph leaf
        traced(torch.randn(1, 1, 64, 64))


@pytest.mark.parametrize("name", ALL)
def test_fx_traced_backward_reaches_every_parameter(name):
    model = small(name, num_classes=42).train()
    train_nodes, _ = get_graph_node_names(model)
    extractor = create_feature_extractor(model, return_nodes=[train_nodes[-1]])
    out = next(iter(extractor(torch.randn(2, 3, 64, 64)).values()))
    out.mean().backward()
    assert out.shape == (2, 42)
    assert [n for n, p in extractor.named_parameters() if p.grad is None] == []
    assert sum(p.numel() for p in extractor.parameters()) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ALL)
def test_device_and_dtype_arguments_reach_every_tensor(name):
    model = mambaout.create_model(name, device="meta", dtype=torch.bfloat16)
    tensors = list(model.parameters()) + list(model.buffers())
    assert {(t.device.type, t.dtype) for t in tensors} == {("meta", torch.bfloat16)}
    single = small(name).eval()
    double = small(name, dtype=torch.float64).eval()
    assert {p.dtype for p in double.parameters()} == {torch.float64}
    double.load_state_dict(single.state_dict())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        out64, out32 = double(x), single(x.float())
    assert out64.dtype == torch.float64
    assert (out64 - out32.double()).abs().max().item() <= 1e-4 * out64.abs().max().item()
