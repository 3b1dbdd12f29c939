"""Fixtures every test shares: one intra-op thread per test module; OpenVINO uncapped under an AVX2 cap.

The suite runs on 2 cores that other jobs also use; two spinning OpenMP threads per process were several times slower
than one there (measured in the first sessions). Tests that are about the thread count set it themselves.

`ONEDNN_MAX_CPU_ISA=AVX2` (the AVX2 emulation of `.ci/run`'s second pass) caps PyTorch's oneDNN and OpenVINO's
own copy alike. On an AVX-512 CPU, OpenVINO 2026.4's MVN (LayerNorm) kernel then segfaults whenever the normalised
width is not a multiple of 16 (a lone MVN over [1, 30] crashes, over [1, 32] runs; Intel Xeon and AMD EPYC alike),
which the step graphs of the SSM and attention detectors have. A real AVX2 CPU has no such mismatch. So this process
latches the cap in PyTorch's oneDNN (one convolution: oneDNN reads the variable once), runs one OpenVINO inference
without it (OpenVINO's copy latches the CPU as it is), and puts the variable back for child processes (the study's
workers stay capped). OpenVINO capped at AVX2 is what tests/export/test_quantize.py checks, in a child process.
"""

import os

import pytest
import torch


def _latch_avx2_cap_for_pytorch_only() -> None:
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if not cap:
        return
    torch.nn.functional.conv2d(torch.zeros(1, 64, 8, 8), torch.zeros(64, 64, 3, 3))  # oneDNN reads the cap now
    try:
        import numpy as np
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return
    del os.environ["ONEDNN_MAX_CPU_ISA"]
    try:
        x = ops.parameter([1, 16], np.float32, name="x")
        y = ops.mvn(x, ops.constant(np.array([1], np.int64)), True, 1e-6, "inside_sqrt")
        model = ov.Core().compile_model(ov.Model([ops.result(y)], [x], "latch"), "CPU")
        model.create_infer_request().infer({"x": np.zeros((1, 16), np.float32)})
    finally:
        os.environ["ONEDNN_MAX_CPU_ISA"] = cap


_latch_avx2_cap_for_pytorch_only()


@pytest.fixture(autouse=True, scope="module")  # module scope: set before the module's other fixtures run
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fused_at_every_size(monkeypatch):
    """Fused blocks take the fused kernels at any input size (in use, inputs under fused_min_elements(channels), a
    multiple of FUSED_MIN_ELEMENTS, run the reference): for the tests of the fused arithmetic, which use small
    inputs."""
    import mambaout.models.fuse

    monkeypatch.setattr(mambaout.models.fuse, "FUSED_MIN_ELEMENTS", 0)
