"""The fused CPU blocks are an explicit, per-model step that changes speed and nothing else."""

import copy

import pytest
import torch
from timm.layers import DropPath

import mambaout
from mambaout.models.fuse import FusedConv2d, FusedGatedCNNBlock, fuse_for_inference, is_fused, unfuse
from mambaout.models.mambaout import GatedCNNBlock

pytestmark = pytest.mark.usefixtures("fused_at_every_size")


def count_fused(model: torch.nn.Module, kind: type = FusedGatedCNNBlock) -> int:
    return sum(type(m) is kind for m in model.modules())


def test_create_model_gives_the_reference_and_fuse_is_per_model_idempotent_and_undoable():
    torch.manual_seed(0)
    model = mambaout.create_model("mambaout_pico").eval()
    other = mambaout.create_model("mambaout_pico").eval()
    before = model.state_dict()
    assert not is_fused(model)
    assert fuse_for_inference(fuse_for_inference(model)) is model
    assert count_fused(model) == 6 and not is_fused(other)  # 1 + 1 + 3 + 1 blocks; the other model untouched
    assert count_fused(model, FusedConv2d) == 5  # the stem's two convolutions and three downsampling layers'
    assert count_fused(model.stages[0], FusedConv2d) == 0  # the blocks' depthwise mixers stay as they are
    with torch.inference_mode():
        model(torch.randn(1, 3, 64, 64))  # the fused path runs: the kept weights now exist
    after = model.state_dict()
    assert list(after) == list(before) and all(after[k].data_ptr() == v.data_ptr() for k, v in before.items())
    assert all(v.is_contiguous() for v in after.values())  # the channels-last weights are copies, not the parameters
    assert unfuse(model) is model and count_fused(model) == 0 and count_fused(model, FusedConv2d) == 0
    assert sum(type(m) is GatedCNNBlock for m in model.modules()) == 6
    assert sum(type(m) is torch.nn.Conv2d for m in model.modules()) == 5 + 6  # and the six depthwise mixers


def test_blocks_with_another_mixer_are_left_as_they_are():
    model = fuse_for_inference(mambaout.create_model("mambaout_pico", mixer="attn").eval())
    assert count_fused(model) == 0
    assert count_fused(model, FusedConv2d) == 5 and is_fused(model)  # the stem and downsampling convs still are


@pytest.mark.parametrize("condition", ["autograd", "autocast", "float64", "meta", "drop_path"])
def test_a_fused_block_falls_back_to_the_reference_arithmetic(condition):
    torch.manual_seed(0)
    reference = mambaout.create_model("mambaout_pico", num_classes=5).eval()
    if condition == "drop_path":  # training with stochastic depth in every block
        for block in reference.modules():
            if isinstance(block, GatedCNNBlock):
                block.drop_path = DropPath(0.5)
    x = torch.randn(2, 3, 32, 32)
    if condition == "float64":
        reference, x = reference.double(), x.double()
    if condition == "meta":
        reference, x = reference.to("meta"), x.to("meta")
    fused = fuse_for_inference(copy.deepcopy(reference))
    if condition == "drop_path":
        reference.train(), fused.train()
    calls = []
    for block in fused.modules():
        if isinstance(block, FusedGatedCNNBlock):
            block.forward_fused = lambda x, block=block: calls.append(1) or FusedGatedCNNBlock.forward_fused(block, x)

    def run(model: torch.nn.Module) -> torch.Tensor:
        torch.manual_seed(1)  # the same drop-path draws for both
        with torch.set_grad_enabled(condition == "autograd"):
            if condition == "autocast":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return model(x)
            return model(x)

    out, expected = run(fused), run(reference)
    assert calls == []
    assert out.shape == expected.shape == (2, 5)
    if condition != "meta":
        assert torch.equal(out, expected)


def test_packed_weights_follow_every_parameter_change_and_never_reach_a_copy_or_a_save(tmp_path):
    torch.manual_seed(0)
    model = fuse_for_inference(mambaout.create_model("mambaout_pico", num_classes=5).eval())
    reference = mambaout.create_model("mambaout_pico", num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)

    def gap() -> float:  # relative to the logits: float32 rounding is ~1e-7, a stale packed weight ~1
        reference.load_state_dict(model.state_dict())
        with torch.no_grad():
            expected = reference(x)
            return ((model(x) - expected).abs().max() / expected.abs().max()).item()

    assert gap() <= 1e-5
    block = next(m for m in model.modules() if isinstance(m, FusedGatedCNNBlock))
    with torch.no_grad():
        block.fc1.weight.mul_(2.0)  # in place: the packed copy is stale unless it is redone
    assert gap() <= 1e-5
    block.fc2.weight = torch.nn.Parameter(torch.randn_like(block.fc2.weight))  # replaced
    assert gap() <= 1e-5
    with torch.no_grad():
        model.stem.conv2.weight.mul_(-1.0)  # a convolution's kept channels-last weight is renewed the same way
    assert gap() <= 1e-5
    state = {k: v + 0.1 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    assert gap() <= 1e-5
    torch.save(copy.deepcopy(model), tmp_path / "fused.pt")  # no oneDNN tensor to copy or pickle
    reloaded = torch.load(tmp_path / "fused.pt", weights_only=False)
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))


def test_a_fused_convolution_keeps_one_channels_last_weight_and_falls_back_under_autograd():
    torch.manual_seed(0)
    model = fuse_for_inference(mambaout.create_model("mambaout_pico", num_classes=5).eval())
    conv = model.stages[1].downsample.conv
    seen = []
    original = conv._conv_forward
    conv._conv_forward = lambda x, w, b: seen.append(w) or original(x, w, b)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x), model(x)
    assert len(seen) == 2 and seen[0] is seen[1]  # made once, kept
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    assert torch.equal(seen[0], conv.weight)  # the same numbers in another layout
    model(x).sum().backward()  # autograd: the parameter itself, so its gradient flows
    assert seen[-1] is conv.weight and conv.weight.grad is not None


@pytest.mark.parametrize("side", [128, 192])
def test_inputs_under_the_size_floor_run_the_reference_and_larger_ones_the_fused_kernels(side, monkeypatch):
    import mambaout.models.fuse as fuse

    monkeypatch.setattr(fuse, "FUSED_MIN_ELEMENTS", 1 << 15)  # the library's floor, not the fixture's 0
    model = fuse_for_inference(mambaout.create_model("mambaout_pico").eval())
    block = model.stages[0].blocks[0]  # input (1, side / 4, side / 4, 16)
    calls = []
    block.forward_fused = lambda x: calls.append(x.numel()) or FusedGatedCNNBlock.forward_fused(block, x)
    with torch.no_grad():
        model(torch.randn(1, 3, side, side))
    assert calls == ([] if side == 128 else [48 * 48 * 16])  # 16384 elements under the floor, 36864 over it


def test_wide_blocks_take_the_fused_kernels_from_fewer_rows(monkeypatch):
    import mambaout.models.fuse as fuse

    monkeypatch.setattr(fuse, "FUSED_MIN_ELEMENTS", 1 << 15)  # the library's floor, not the fixture's 0
    assert [fuse.fused_min_elements(c) for c in (16, 96, 191, 192, 576)] == [32768] * 3 + [12288] * 2
    model = fuse_for_inference(mambaout.create_model("mambaout_femto").eval())
    calls = []
    for stage in model.stages:
        for block in stage.blocks:
            block.forward_fused = lambda x, b=block: (
                calls.append(tuple(x.shape)) or FusedGatedCNNBlock.forward_fused(b, x)
            )
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    # batch 1 at 224²: every stage fused, the last one's 7 x 7 rows of 288 (14112 elements) too
    assert calls == [(1, 56, 56, 48)] * 3 + [(1, 28, 28, 96)] * 3 + [(1, 14, 14, 192)] * 9 + [(1, 7, 7, 288)] * 3
    calls.clear()
    with torch.no_grad():
        model(torch.randn(1, 3, 160, 160))
    # 160²: the third stage's 10 x 10 rows of 192 (19200 elements) fused, the last one's 5 x 5 of 288 (7200) not
    assert calls == [(1, 40, 40, 48)] * 3 + [(1, 20, 20, 96)] * 3 + [(1, 10, 10, 192)] * 9


def test_a_write_past_the_version_counter_needs_fusing_again_and_inference_made_weights_are_never_packed():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model = fuse_for_inference(mambaout.create_model("mambaout_pico", num_classes=5).eval())
    reference = mambaout.create_model("mambaout_pico", num_classes=5).eval()
    with torch.no_grad():
        model(x)  # packs
        block = next(m for m in model.modules() if isinstance(m, FusedGatedCNNBlock))
        block.fc1.weight.data.mul_(2.0)  # .data: autograd's version counter does not see it
        model.stem.conv1.weight.data.mul_(2.0)
        reference.load_state_dict(model.state_dict())
        assert (model(x) - reference(x)).abs().max() > 1e-4  # the stale packed copy, as documented (rounding: 1e-7)
        fuse_for_inference(model)  # drops the packed copies
        assert torch.allclose(model(x), reference(x), rtol=1e-5, atol=1e-5)
    with torch.inference_mode():  # inference tensors have no version counter: sliced per call, never cached
        made = fuse_for_inference(mambaout.create_model("mambaout_pico", num_classes=5).eval())
        made.load_state_dict(model.state_dict())
        assert torch.allclose(made(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_a_traced_fused_model_records_the_reference_ops():
    model = fuse_for_inference(mambaout.create_model("mambaout_pico", num_classes=5).eval())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        expected = unfuse(copy.deepcopy(model))(x)
    assert "mkldnn" not in str(traced.inlined_graph)
    assert "aten::linear" in str(traced.inlined_graph) and torch.allclose(traced(x), expected, atol=1e-6)
