"""Cost counting, memory tracking and the fast inference path: the numbers they report are right."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import mambaout
from mambaout.infer.fast import fast_dtype, optimize_for_inference
from mambaout.measure.cost import FUSED_OP_FLOPS, count_macs, count_params
from mambaout.measure.memory import TensorMemoryTracker, peak_memory_bytes
from mambaout.models.fuse import fuse_for_inference, is_fused, unfuse


def test_macs_of_a_linear_and_a_conv_are_exact():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    assert count_macs(model, (2, 3, 4, 4)) == 2 * (8 * 4 * 4 * 3 * 9 + 8 * 4 * 4 * 5)
    assert count_params(model) == 8 * 27 + 8 + 128 * 5 + 5


def test_layernorm_costs_five_per_element_like_fvcore():
    model = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 4))
    assert count_macs(model, (3, 16)) == 3 * 16 * 4 + 5 * 3 * 16
    assert count_macs(model, (3, 16), include_norms=False) == 3 * 16 * 4


def test_modules_declare_what_the_counter_cannot_see():
    class Opaque(nn.Module):
        def forward(self, x):
            return x * 2

        def extra_macs(self, inputs, output):
            return 1000

    assert count_macs(nn.Sequential(Opaque(), Opaque()), (1, 4)) == 2000


@pytest.mark.usefixtures("fused_at_every_size")
def test_fused_and_reference_femto_count_the_same_macs():
    torch.manual_seed(0)
    model = mambaout.create_model("mambaout_femto").eval()
    reference = count_macs(model, (1, 3, 224, 224))
    fuse_for_inference(model)
    assert is_fused(model)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=FUSED_OP_FLOPS) as counter:
        model(torch.randn(1, 3, 224, 224))
    fused_ops = counter.get_flop_counts()["Global"][torch.ops.mkldnn._linear_pointwise]
    # every block's fc1 (dim -> 2 hidden) and fc2 (hidden -> dim) ran fused: 3 * dim * hidden MACs per token
    blocks = zip((3, 3, 9, 3), (48, 96, 192, 288), (56, 28, 14, 7))
    assert fused_ops == 2 * sum(depth * side**2 * 3 * dim * int(8 / 3 * dim) for depth, dim, side in blocks)
    assert count_macs(model, (1, 3, 224, 224)) == reference
    assert round(reference / 1e9, 3) == 1.156  # docs/models.md, and the paper's 1.2 G
    assert count_macs(unfuse(model), (1, 3, 224, 224)) == reference


def test_peak_memory_sees_intermediates_and_frees():
    def work():
        a = torch.ones(1000, 1000)  # 4 MB
        b = a * 2  # 4 MB more, both alive
        del a
        return (b + 1).sum()  # 4 MB while b lives, then the 4-byte sum while both are alive

    assert peak_memory_bytes(work) == 8_000_004
    with TensorMemoryTracker() as mem:
        result = work()
    assert mem.current_bytes == 4 and mem.peak_bytes == 8_000_004  # only the returned scalar is still alive
    del result


@pytest.mark.usefixtures("fused_at_every_size")
def test_fast_path_on_this_cpu_agrees_with_the_reference_to_fp32_rounding():
    torch.manual_seed(0)
    model = mambaout.create_model("mambaout_pico", num_classes=10).eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)  # create_model gives the reference blocks
    fast = optimize_for_inference(model, x)(x)
    tol = 1e-5 if fast_dtype("cpu") == torch.float32 else 5e-2
    assert (fast - ref).abs().max().item() <= tol * ref.abs().max().item()
    assert torch.equal(fast.argmax(-1), ref.argmax(-1))


@pytest.mark.parametrize(
    "onednn, dnnl, dtype",
    [
        (None, None, torch.bfloat16),
        ("AVX2", None, torch.float32),  # what .ci/run's second pass sets
        ("avx512_core_vnni", None, torch.float32),  # oneDNN reads either case
        (None, "AVX2", torch.float32),
        ("AVX512_CORE_BF16", None, torch.bfloat16),
        ("AVX512_CORE_AMX", "AVX2", torch.bfloat16),  # ONEDNN_ wins over DNNL_, as in oneDNN
    ],
)
def test_on_a_bf16_cpu_the_fast_path_is_float32_under_a_onednn_cap_below_avx512_bf16(monkeypatch, onednn, dnnl, dtype):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)  # CPUID says bf16, whatever this CPU is
    for name, value in (("ONEDNN_MAX_CPU_ISA", onednn), ("DNNL_MAX_CPU_ISA", dnnl)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert fast_dtype("cpu") == dtype


@pytest.mark.usefixtures("fused_at_every_size")
@pytest.mark.parametrize("requires_grad", [True, False])
def test_fused_path_is_only_taken_without_autograd(requires_grad):
    model = fuse_for_inference(mambaout.create_model("mambaout_pico").eval())
    calls = []
    block = model.stages[0].blocks[0]
    block.forward_fused = lambda x: calls.append(1) or type(block).forward_fused(block, x)
    with torch.set_grad_enabled(requires_grad):
        model(torch.randn(1, 3, 32, 32))
    assert bool(calls) == (not requires_grad)


def test_the_benchmarks_fast_flag_applies_to_our_model_and_timm_stays_the_eager_baseline():
    from mambaout.bench.speed import BenchConfig, prepare

    cfg = BenchConfig("mambaout_pico", fast=True)
    x = torch.randn(1, 3, 64, 64)
    theirs = mambaout.create_model("mambaout_pico")
    assert prepare(theirs, cfg, x, ours=False) is theirs and not is_fused(theirs)
    ours = mambaout.create_model("mambaout_pico")
    fast = prepare(ours, cfg, x)
    assert not isinstance(fast, nn.Module) and is_fused(ours)  # optimize_for_inference's callable
