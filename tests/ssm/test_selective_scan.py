"""The selective scan's contract: every backend matches the sequential reference in value and in every gradient."""

import functools
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import mambaout
from mambaout.ssm import SelectiveSSM, scan_flops, selective_scan, selective_scan_ref
from mambaout.ssm.fused import FASTMATH, _exp2, _expf
from mambaout.ssm.scan import _resolve_backend

CONFIGS = {
    "plain": {},
    "gate_z": {"z": True},
    "bias_softplus": {"delta_bias": True, "delta_softplus": True},
    "bias_only": {"delta_bias": True},  # the fused kernel's slope-1 path for d delta_bias
    "softplus_only": {"delta_softplus": True},
    "grouped_BC": {"groups": 2},
    "everything": {"z": True, "delta_bias": True, "delta_softplus": True, "groups": 2, "D": True},
    "initial_state": {"initial_state": True},
    "everything_from_a_state": {
        "z": True,
        "delta_bias": True,
        "delta_softplus": True,
        "groups": 2,
        "D": True,
        "initial_state": True,
    },
}
# (batch, D, L, N): odd L, L = 1, batch 1 and 3, L longer than one fused block (64) and one torch chunk (64)
SHAPES = [(1, 4, 37, 5), (3, 6, 1, 3), (3, 8, 37, 16), (2, 4, 150, 4)]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| / max|b| (plain max|a - b| when b is all zero)."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def make_inputs(
    batch,
    dim,
    seqlen,
    n_state,
    groups=1,
    z=False,
    D=False,
    delta_bias=False,
    initial_state=False,
    seed=0,
    delta_softplus=False,
    **_,
):
    """float64 inputs; without softplus the bias is non-negative, so that Δ = delta + delta_bias stays a step size
    (a negative Δ makes exp(Δ A) grow, and 150 steps of it overflow)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    bc_shape = (batch, groups, n_state, seqlen) if groups > 1 else (batch, n_state, seqlen)
    inputs = {
        "u": randn(batch, dim, seqlen),
        "delta": torch.rand(batch, dim, seqlen, generator=g, dtype=torch.float64) * 0.5,
        "A": -torch.rand(dim, n_state, generator=g, dtype=torch.float64) * 3,
        "B": randn(*bc_shape),
        "C": randn(*bc_shape),
        "D": randn(dim) if D else None,
        "z": randn(batch, dim, seqlen) if z else None,
        "delta_bias": (randn(dim) if delta_softplus else randn(dim).abs()) * 0.5 if delta_bias else None,
        # a state of the size a running scan reaches (|h| ~ |B u| / (1 - exp(Δ A)) ~ a few)
        "initial_state": randn(batch, dim, n_state) * 2 if initial_state else None,
    }
    return inputs


def run(scan, inputs, dtype=torch.float32, delta_softplus=False, **kwargs):
    """Output, last state and the gradient of every given input under a fixed random projection of both."""
    leaves = {k: v.detach().to(dtype).requires_grad_() for k, v in inputs.items() if v is not None}
    out, last_state = scan(**leaves, delta_softplus=delta_softplus, return_last_state=True, **kwargs)
    g = torch.Generator().manual_seed(1)
    loss = (out.double() * torch.randn(out.shape, generator=g, dtype=torch.float64)).sum()
    loss = loss + (last_state.double() * torch.randn(last_state.shape, generator=g, dtype=torch.float64)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return out, last_state, dict(zip(leaves, grads))


@pytest.mark.parametrize("backend", ["numba", "torch", "unrolled"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_backend_matches_float64_reference_in_output_and_every_gradient(backend, shape, config):
    flags = CONFIGS[config]
    inputs = make_inputs(*shape, **flags)
    softplus = flags.get("delta_softplus", False)
    out_ref, last_ref, grads_ref = run(selective_scan_ref, inputs, torch.float64, softplus)
    out, last_state, grads = run(selective_scan, inputs, torch.float32, softplus, backend=backend)

    assert out.dtype == torch.float32 and out.shape == inputs["u"].shape
    assert last_state.shape == (shape[0], shape[1], shape[3])
    assert rel_err(out, out_ref) <= 1e-5
    assert rel_err(last_state, last_ref) <= 1e-5
    assert set(grads) == {k for k, v in inputs.items() if v is not None}
    for name in grads:
        assert grads[name].shape == inputs[name].shape
        assert rel_err(grads[name], grads_ref[name]) <= 1e-5, name


# (batch, D, L, N, groups): two groups of one 150-channel tile each; three tiles of 174, 174 and 172 channels
@pytest.mark.parametrize("shape", [(4, 300, 70, 16, 2), (2, 520, 40, 16, 1)], ids=["150x1x2", "174x3"])
def test_fused_kernel_on_tiles_wider_than_64_channels_matches_float64_reference(shape):
    from mambaout.ssm.fused import tile_width

    *size, groups = shape
    assert tile_width(size[0], size[1], groups) > 64
    flags = dict(CONFIGS["everything"], groups=groups, initial_state=True)
    inputs = make_inputs(*size, **flags)
    out_ref, last_ref, grads_ref = run(selective_scan_ref, inputs, torch.float64, True)
    out, last_state, grads = run(selective_scan, inputs, torch.float32, True, backend="numba")
    assert rel_err(out, out_ref) <= 1e-5 and rel_err(last_state, last_ref) <= 1e-5
    for name in grads:
        assert rel_err(grads[name], grads_ref[name]) <= 1e-5, name


def split_along_time(inputs: dict, at: int) -> tuple[dict, dict]:
    """The inputs of steps [0, at) and [at, L): every (…, L) tensor cut along L, the others shared."""
    first, second = {}, {}
    for name, t in inputs.items():
        timed = name in ("u", "delta", "z", "B", "C") and t is not None
        first[name], second[name] = (t[..., :at], t[..., at:]) if timed else (t, t)
    return first, second


# split points: one step in, inside a torch chunk (16) and a fused block (64), on both boundaries, one step past
@pytest.mark.parametrize("backend", ["numba", "torch", "unrolled", "ref"])
@pytest.mark.parametrize("at", [1, 7, 16, 64, 65, 149])
def test_scanning_two_chunks_with_the_carried_state_equals_one_scan_in_value_and_every_gradient(backend, at):
    inputs = make_inputs(2, 6, 150, 4, groups=2, z=True, D=True, delta_bias=True, initial_state=True, seed=at)
    leaves = {k: v.float().requires_grad_() for k, v in inputs.items() if v is not None}
    kwargs = dict(delta_softplus=True, return_last_state=True, backend=backend)
    whole, whole_last = selective_scan(**leaves, **kwargs)
    first, second = split_along_time(leaves, at)
    out1, state = selective_scan(**first, **kwargs)
    out2, last = selective_scan(**(second | {"initial_state": state}), **kwargs)
    chunked = torch.cat([out1, out2], dim=-1)
    assert rel_err(chunked, whole) <= 1e-6 and rel_err(last, whole_last) <= 1e-6

    g = torch.Generator().manual_seed(2)
    weight, last_weight = torch.randn(whole.shape, generator=g), torch.randn(whole_last.shape, generator=g)
    grads_whole = torch.autograd.grad((whole * weight).sum() + (whole_last * last_weight).sum(), list(leaves.values()))
    grads_chunked = torch.autograd.grad((chunked * weight).sum() + (last * last_weight).sum(), list(leaves.values()))
    for name, g_whole, g_chunked in zip(leaves, grads_whole, grads_chunked):
        assert rel_err(g_chunked, g_whole) <= 1e-5, name  # measured <= 5e-7


def test_a_detached_state_stops_the_gradient_at_the_chunk_boundary():
    # truncated backpropagation through time: the second chunk's loss reaches the first chunk only through the state
    inputs = make_inputs(1, 4, 40, 3, initial_state=True)
    leaves = {k: v.float().requires_grad_() for k, v in inputs.items() if v is not None}
    first, second = split_along_time(leaves, 20)
    _, state = selective_scan(**first, return_last_state=True)
    (through,) = torch.autograd.grad(selective_scan(**(second | {"initial_state": state})).sum(), leaves["u"])
    assert through[..., :20].abs().max() > 1e-3 and through[..., 20:].abs().max() > 1e-3
    _, state = selective_scan(**first, return_last_state=True)
    (cut,) = torch.autograd.grad(selective_scan(**(second | {"initial_state": state.detach()})).sum(), leaves["u"])
    assert cut[..., :20].abs().max() == 0 and torch.equal(cut[..., 20:], through[..., 20:])


# (batch, D, L, N, G). Batch 1 is where the fused kernel cuts the channels into the most tiles (5 of 8 at D 40). The
# last shapes' (batch, D, L) tensors have > 32768 elements: there torch splits its own pointwise ops between
# threads, and its SIMD and scalar softplus / silu differ in the last bit (docs/ssm.md, "Threads"). The last one has
# 2^20 state updates or more: one thread runs the parallel build too.
THREAD_SHAPES = [(1, 40, 70, 8, 1), (1, 64, 130, 16, 2), (3, 200, 65, 16, 1), (2, 128, 260, 16, 1)]
TORCH_SPLITS_ABOVE = 32768  # at::internal::GRAIN_SIZE


def results_at_current_threads() -> dict[str, torch.Tensor]:
    """Output, last state and all gradients of both fast backends on THREAD_SHAPES, with Δ given as is or set up by
    softplus(delta + delta_bias) (z and D always on); keys "backend shape delta name"."""
    results = {}
    for backend in ("numba", "torch"):
        for batch, dim, seqlen, n_state, groups in THREAD_SHAPES:
            for softplus in (False, True):
                inputs = make_inputs(batch, dim, seqlen, n_state, groups=groups, z=True, D=True, delta_bias=softplus)
                out, last_state, grads = run(selective_scan, inputs, delta_softplus=softplus, backend=backend)
                key = f"{backend} {batch}x{dim}x{seqlen}x{n_state}x{groups} {'softplus' if softplus else 'given'}"
                results |= {f"{key} out": out, f"{key} last_state": last_state}
                results |= {f"{key} d{name}": g for name, g in grads.items()}
    results["threads"] = torch.tensor([torch.get_num_threads(), numba.get_num_threads()])  # torch's, numba's pool
    return results


def test_fused_kernel_is_bitwise_the_same_at_1_and_2_threads_and_torch_pointwise_ops_within_1e_6(tmp_path):
    # 2 threads in a fresh process: numba fixes its pool size (NUMBA_NUM_THREADS) when it starts. There the parallel
    # kernels run every shape (however small); at 1 thread their serial twins do.
    path = tmp_path / "two_threads.pt"
    paths = [str(Path(mambaout.__file__).parents[1]), str(Path(__file__).parent)]
    code = (
        f"import sys, torch; sys.path[:0] = {paths!r}; torch.set_num_threads(2); "
        "import mambaout.ssm.fused as fused; fused._PARALLEL_MIN = 0; "
        "from test_selective_scan import results_at_current_threads; "
        f"torch.save(results_at_current_threads(), {str(path)!r})"
    )
    env = os.environ | {"NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = results_at_current_threads()
    finally:
        torch.set_num_threads(threads)
    two = torch.load(path)
    assert one.pop("threads")[0].item() == 1 and two.pop("threads").tolist() == [2, 2]
    assert one.keys() == two.keys() and len(one) == 2 * 4 * (2 * 9 + 1)  # 9 results, 10 with delta_bias

    small = {"x".join(map(str, s)) for s in THREAD_SHAPES if s[0] * s[1] * s[2] <= TORCH_SPLITS_ABOVE}

    def exact(name: str) -> bool:
        backend, shape, delta = name.split()[:3]
        return shape in small or backend == "numba"  # the kernel sets up Δ itself: no torch pointwise op around it

    differ = [name for name in one if not torch.equal(one[name], two[name])]
    assert [name for name in differ if exact(name)] == []
    assert all(rel_err(one[name], two[name]) <= 1e-6 for name in differ)  # measured <= 3e-8


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # shape checks: a trace is specialised to its shapes
@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")  # deprecated, but what ONNX's legacy export runs
@pytest.mark.parametrize("tracer", ["jit.trace", "export"])
def test_traced_or_exported_ssm_is_plain_tensor_ops_and_matches_eager(tracer):
    torch.manual_seed(0)
    x, z = torch.randn(2, 40, 16), torch.randn(2, 40, 16)

    def graph_of(module):
        if tracer == "jit.trace":
            traced = torch.jit.trace(module, (x, z))
            return traced, str(traced.inlined_graph)
        exported = torch.export.export(module, (x, z))
        return exported.module(), str(exported.graph)

    ssm = SelectiveSSM(16, d_state=4)
    traced, graph = graph_of(ssm)
    assert "selective_scan_fwd" not in graph  # "auto" took the chunked torch scan: ops any ONNX runtime has
    x2, z2 = torch.randn(2, 40, 16), torch.randn(2, 40, 16)
    assert rel_err(traced(x2, z2), ssm(x2, z2)) <= 1e-5  # eager runs the fused kernel
    ssm.backend = "numba"  # asked for by name, the fused kernel is kept, as one custom op
    assert "selective_scan_fwd" in graph_of(ssm)[1]


HOST_FEATURES = "+64bit,+avx,+avx2,+fma,+avx512f,+avx512vl"


@pytest.mark.parametrize(
    "environ, host, features",
    [
        ({}, HOST_FEATURES, HOST_FEATURES + ",-prefer-256-bit"),  # AVX-512: 512-bit vectors where LLVM would not
        ({}, "+64bit,+avx,+avx2,+fma,-avx512f", None),  # AVX2: the host's own
        ({"NUMBA_CPU_NAME": "haswell"}, HOST_FEATURES, ""),  # the named CPU's instructions, not the host's
        ({"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "+avx2"}, HOST_FEATURES, None),  # the user's choice
    ],
    ids=["avx512-host", "avx2-host", "cpu-named", "features-given"],
)
def test_kernels_compile_for_the_cpu_named_in_the_environment_else_the_host_with_its_widest_vectors(
    environ, host, features
):
    from mambaout.ssm.fused import _target_features

    assert _target_features(environ, host) == features


def _vector_registers(environ: dict[str, str]) -> set[str]:
    """The vector register kinds (xmm, ymm, zmm) of a loop numba compiles after importing the kernels' module."""
    code = (
        "import re, numpy as np, numba, mambaout.ssm.fused\n"
        "@numba.njit\n"
        "def axpy(a, x, y):\n"
        "    for i in range(x.shape[0]):\n"
        "        y[i] += a * x[i]\n"
        "axpy(np.float32(2), np.ones(64, np.float32), np.ones(64, np.float32))\n"
        "print(' '.join(sorted(set(re.findall(r'%([xyz]mm)\\d', axpy.inspect_asm(axpy.signatures[0]))))))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")} | environ
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_a_haswell_named_in_the_environment_gets_no_avx512_code_and_an_avx512_host_gets_its_zmm_registers():
    assert "zmm" not in _vector_registers({"NUMBA_CPU_NAME": "haswell"})  # what an AVX2 CPU can run
    if "+avx512f" in numba.core.codegen.get_host_cpu_features().split(","):
        assert "zmm" in _vector_registers({})


def test_one_thread_runs_the_serial_build_below_2_to_24_updates_and_two_threads_the_parallel_one_from_2_to_20():
    from mambaout.ssm import fused

    parallel, serial = object(), object()
    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert fused.choose_build(parallel, serial, (1 << 24) - 1) is serial
        assert fused.choose_build(parallel, serial, 1 << 24) is parallel and numba.get_num_threads() == 1
        if numba.config.NUMBA_NUM_THREADS >= 2:
            torch.set_num_threads(2)
            assert fused.choose_build(parallel, serial, (1 << 20) - 1) is serial
            assert fused.choose_build(parallel, serial, 1 << 20) is parallel and numba.get_num_threads() == 2
    finally:
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)


@pytest.mark.parametrize("count", [1, 4])
def test_fused_forward_gives_the_same_bits_whatever_interleave_llvm_vectorises_it_with(count, monkeypatch):
    # On 8-lane x86 targets the forward kernels are built with LLVM's interleave forced (fused._FORWARD_INTERLEAVE),
    # elsewhere with its cost model's choice: channels are independent, so no result may depend on it.
    from mambaout.ssm import fused

    def forward() -> list[torch.Tensor]:
        results = []
        for batch, dim, seqlen, n_state in [(4, 16, 70, 16), (2, 64, 36, 16), (2, 40, 100, 8)]:
            inputs = make_inputs(batch, dim, seqlen, n_state, z=True, D=True, delta_bias=True, delta_softplus=True)
            leaves = {k: v.float() for k, v in inputs.items() if v is not None}
            with torch.no_grad():
                results += selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend="numba")
        return results

    built = forward()
    twin = fused.serial_twin(fused.scan_fwd_kernel, f"forward_interleaved_{count}")
    with fused.llvm_interleave(count):
        twin.compile(fused.scan_fwd_serial.signatures[0])
    monkeypatch.setattr(fused, "scan_fwd_serial", twin)
    monkeypatch.setattr(fused, "scan_fwd_kernel", twin)
    again = forward()
    assert len(twin.signatures) == 1  # the scans ran the twin as built, nothing compiled again
    assert len(built) == 6 and all(torch.equal(a, b) for a, b in zip(built, again))


@pytest.mark.parametrize("length", [3, 4096], ids=["serial-build", "parallel-build"])
def test_after_compile_kernels_no_scan_compiles_anything_with_or_without_d_z_groups_or_a_carried_state(length):
    from mambaout.ssm import fused

    fused.compile_kernels()
    dispatchers = [fused.scan_fwd_kernel, fused.scan_fwd_serial, fused.scan_bwd_kernel, fused.scan_bwd_serial]
    compiled = {d: len(d.signatures) for d in [*dispatchers, fused._sum_rows]}
    assert all(compiled[d] == 1 for d in dispatchers) and compiled[fused._sum_rows] == 2  # float32 and float64 sums
    for options in (dict(z=True, D=True, initial_state=True), dict(z=False, D=False, initial_state=False)):
        inputs = make_inputs(2, 16, length, 16, groups=2 if options["z"] else 1, delta_bias=True, seed=0, **options)
        leaves = {k: v.float().requires_grad_() for k, v in inputs.items() if v is not None}
        out = selective_scan(**leaves, delta_softplus=True, backend="numba")
        out.sum().backward()
    assert {d: len(d.signatures) for d in compiled} == compiled


def test_kernel_softplus_is_within_2_ulp_of_softplus_and_its_slope_within_3_ulp_of_sigmoid():
    from mambaout.ssm.fused import _step_sizes

    x = np.linspace(-80.0, 40.0, 1_200_001, dtype=np.float32)  # exp(-80) is still a normal float32
    dt, slope = np.empty_like(x), np.empty_like(x)
    _step_sizes(dt, slope, x, np.zeros_like(x), True)
    exact = F.softplus(torch.from_numpy(x).double()).numpy()  # x itself above 20, as PyTorch's
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(dt - exact) / ulp) <= 2.0  # measured 1.9; PyTorch's float32 softplus: 1.5
    sigmoid = torch.sigmoid(torch.from_numpy(x).double()).numpy()
    sigmoid[x > 20] = 1.0  # PyTorch's softplus backward passes the gradient through unchanged above the threshold
    assert np.max(np.abs(slope - sigmoid) / np.spacing(sigmoid.astype(np.float32))) <= 3.0  # 2.3; torch.sigmoid: 2.5
    _step_sizes(dt, slope, x, np.ones_like(x), False)  # without softplus: the sum, slope 1
    assert np.array_equal(dt, x + np.float32(1.0)) and np.all(slope == 1.0)


@numba.njit(fastmath=FASTMATH)
def _elementwise(f, x):
    """f, one of the kernels' scalar functions, over an array, compiled with the kernels' floating-point flags."""
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = f(x[i])
    return out


def test_kernel_exp_is_within_1e_7_of_exp_and_keeps_its_limits():
    kernel_exp = functools.partial(_elementwise, _expf)
    x = np.linspace(-87.0, 88.0, 1_000_001, dtype=np.float32)
    exact = np.exp(x.astype(np.float64))
    assert np.max(np.abs(kernel_exp(x) - exact) / exact) <= 1e-7  # measured 8.8e-8, 1.5 ulp
    limits = kernel_exp(np.array([-np.inf, -200.0, -100.0, 100.0, np.inf, np.nan], dtype=np.float32))
    assert limits[0] == limits[1] == 0.0 and abs(limits[2] - np.exp(-100.0)) <= 2.0**-149  # denormal, not flushed
    assert np.isinf(limits[3]) and np.isinf(limits[4]) and np.isnan(limits[5])


def test_scan_decay_power_of_two_is_within_1_2_ulp_and_clamped_to_normal_finite_floats():
    kernel_exp2 = functools.partial(_elementwise, _exp2)
    t = np.linspace(-126.0, 127.0, 2_000_001, dtype=np.float32)
    exact = np.exp2(t.astype(np.float64))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(kernel_exp2(t) - exact) / ulp) <= 1.5  # measured 0.93 with FMA, 1.2 without
    limits = kernel_exp2(np.array([-np.inf, -1000.0, -126.5, 127.5, 1000.0, np.inf, np.nan], dtype=np.float32))
    assert np.all(limits[:3] == np.float32(2.0**-126)) and np.all(limits[3:6] == np.float32(2.0**127))
    assert np.isnan(limits[6])


def test_auto_backend_is_the_fused_kernel_on_cpu_and_torch_elsewhere():
    assert _resolve_backend("auto", torch.zeros(1)) == "numba"
    assert _resolve_backend("auto", torch.zeros(1, device="meta")) == "torch"
    inputs = make_inputs(2, 4, 20, 3, z=True, D=True)
    auto = run(selective_scan, inputs)
    fused = run(selective_scan, inputs, backend="numba")
    assert torch.equal(auto[0], fused[0])
    assert all(torch.equal(auto[2][k], fused[2][k]) for k in auto[2])


def test_torch_backend_is_device_agnostic_code():
    # a meta tensor goes through every op of the torch path without data: the GPU path has no CPU-only call
    u = torch.empty(2, 8, 100, device="meta")
    A, B = torch.empty(8, 4, device="meta"), torch.empty(2, 4, 100, device="meta")
    out, last_state = selective_scan(u, u, A, B, B, z=u, delta_softplus=True, return_last_state=True)
    assert out.device.type == "meta" and out.shape == (2, 8, 100) and last_state.shape == (2, 8, 4)


def test_noncontiguous_inputs_give_the_contiguous_result():
    inputs = make_inputs(2, 6, 33, 4, z=True, D=True, delta_bias=True)
    strided = {}
    for name, t in inputs.items():
        if t is not None and t.dim() == 3:  # (b, X, L) stored as (b, L, X), then viewed back: transposed strides
            strided[name] = t.transpose(1, 2).contiguous().transpose(1, 2)
        elif t is not None:  # every other element of a tensor twice as long
            strided[name] = torch.stack([t, torch.zeros_like(t)], dim=-1)[..., 0]
        else:
            strided[name] = None
    assert not strided["u"].is_contiguous() and not strided["D"].is_contiguous()
    out, last_state, grads = run(selective_scan, strided, delta_softplus=True)
    out_c, last_c, grads_c = run(selective_scan, inputs, delta_softplus=True)
    assert rel_err(out, out_c) <= 1e-6 and rel_err(last_state, last_c) <= 1e-6
    assert all(rel_err(grads[k], grads_c[k]) <= 1e-6 for k in grads)


def test_bfloat16_inputs_compute_in_float32_and_return_bfloat16():
    inputs = make_inputs(2, 8, 64, 8, z=True, D=True, delta_bias=True)
    out, _, grads = run(selective_scan, inputs, torch.bfloat16, delta_softplus=True)
    out_ref, _, grads_ref = run(selective_scan_ref, inputs, torch.float64, delta_softplus=True)
    assert out.dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in grads.values())
    assert rel_err(out, out_ref) <= 3e-2  # bf16 rounding of inputs and output, not of the scan
    assert all(rel_err(grads[k], grads_ref[k]) <= 5e-2 for k in grads)


def saved_tensor_sizes(fn) -> list[int]:
    """Element counts of every tensor that autograd saves while fn() builds its graph."""
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sizes


def test_fused_scan_saves_no_per_state_tensor_for_backward():
    batch, dim, seqlen, n_state = 2, 32, 256, 16
    inputs = make_inputs(batch, dim, seqlen, n_state, z=True, D=True, delta_bias=True)
    leaves = {k: v.float().requires_grad_() for k, v in inputs.items() if v is not None}
    states = batch * dim * seqlen * n_state  # what mamba.py-style scans keep: 262144 elements

    fused = saved_tensor_sizes(lambda: selective_scan(**leaves, delta_softplus=True))
    assert max(fused) <= batch * dim * seqlen  # the largest saved tensor is an input-sized one
    assert sum(fused) <= 0.35 * states  # inputs, Δ, and one state per 64 steps: 86k elements
    reference = saved_tensor_sizes(lambda: selective_scan_ref(**leaves, delta_softplus=True))
    assert sum(reference) >= states  # the yardstick does keep every state, and the hook sees it


def test_flop_counter_runs_through_the_fused_scan_and_counts_only_the_ops_around_it():
    inputs = make_inputs(2, 8, 40, 4, z=True)
    leaves = {k: v.float().requires_grad_() for k, v in inputs.items() if v is not None}
    weight = torch.randn(40, 5)
    with FlopCounterMode(display=False) as counter:
        out = selective_scan(**leaves) @ weight  # the matmul is visible to the counter, the scan is not
        out.sum().backward()
    matmul_flops = 2 * (2 * 8 * 40 * 5) * 2  # forward + the backward matmul for the scan's output
    assert counter.get_total_flops() == matmul_flops
    assert torch.equal(out, selective_scan(**leaves) @ weight)


def test_scan_flops_is_nine_per_state_element_plus_skip_and_gate():
    assert scan_flops(2, 8, 10, 4, with_D=False) == 9 * 2 * 10 * 8 * 4 == 5760
    assert scan_flops(2, 8, 10, 4) == 5760 + 2 * 8 * 10
    assert scan_flops(2, 8, 10, 4, with_z=True) == 5760 + 2 * 2 * 8 * 10


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"u": torch.zeros(2, 4)}, "u must have shape"),
        ({"delta": torch.zeros(2, 4, 9)}, "delta must have u's shape"),
        ({"A": torch.zeros(5, 3)}, "A must have shape"),
        ({"A": torch.zeros(4, 3, dtype=torch.complex64)}, "complex A is not supported"),
        ({"B": torch.zeros(2, 2, 10)}, "B must have shape"),
        ({"B": torch.zeros(2, 3, 3, 10), "C": torch.zeros(2, 3, 3, 10)}, "3 groups, which must divide D = 4"),
        ({"C": torch.zeros(2, 2, 3, 10)}, "as many groups"),
        ({"D": torch.zeros(3)}, "D must have shape"),
        ({"z": torch.zeros(2, 4, 9)}, "z must have u's shape"),
        ({"initial_state": torch.zeros(2, 3, 4)}, "initial_state must have shape"),
        ({"backend": "cuda"}, "backend must be one of"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_user_mistakes_raise_one_clear_value_error(change, message):
    args = {"u": torch.zeros(2, 4, 10), "delta": torch.zeros(2, 4, 10), "A": torch.zeros(4, 3)}
    args |= {"B": torch.zeros(2, 3, 10), "C": torch.zeros(2, 3, 10)}
    with pytest.raises(ValueError, match=message):
        selective_scan(**(args | change))
