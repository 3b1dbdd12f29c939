"""The opt-in fast inference path: the best precision/format this device runs fastest, chosen for you.

`optimize_for_inference` picks, per device:

- CUDA: bf16 autocast + channels-last input (what tensor cores want); `compile=True` adds torch.compile.
- CPU with native bf16 (AVX512-BF16 or AMX, and oneDNN not capped below it): bf16 autocast. Measured on a quiet
  2-core AMD EPYC with avx512_bf16 (docs/export.md): 1.39x the throughput of the fused fp32 blocks.
- Other CPUs: the fused fp32 blocks (`mambaout.models.fuse`, equal to the reference to float32 rounding). Measured on
  a 2-core AVX-512 Xeon without BF16 (see docs/models.md): bf16 autocast ran 2.1x slower and int8 dynamic
  quantization 1.25x slower than the fused fp32 path, and torch.compile took ~5 minutes to compile and was not
  faster.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from mambaout.models.fuse import fuse_for_inference

# oneDNN's instruction-set caps (`ONEDNN_MAX_CPU_ISA`, or `DNNL_MAX_CPU_ISA`; oneDNN reads them in either case) below
# AVX512_CORE_BF16: under them oneDNN has no bfloat16 matrix product or convolution of its own, and PyTorch, which
# asks CPUID and not oneDNN, still sends bf16 work there. On a 2-core Xeon with AMX, femto at 224², batch 8, bf16
# autocast under ONEDNN_MAX_CPU_ISA=AVX2 took 1.7 s (PyTorch's reference convolutions, one call per group and image,
# and bf16 matrix products at 1/9 of float32's speed) against 0.15 s for timm's float32 model under the same cap.
_ONEDNN_CAPS_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)


def onednn_isa_cap() -> str | None:
    """The instruction-set cap oneDNN runs under (`ONEDNN_MAX_CPU_ISA`, else `DNNL_MAX_CPU_ISA`), or None."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return cap.strip().upper() if cap else None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX) and oneDNN may use it (no cap below
    AVX512_CORE_BF16)."""
    if onednn_isa_cap() in _ONEDNN_CAPS_WITHOUT_BF16:
        return False
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def fast_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype `optimize_for_inference` computes in on `device`."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def optimize_for_inference(
    model: nn.Module, example: torch.Tensor | None = None, compile: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return a callable `f(images) -> logits` running `model` the fastest way this device allows.

    `model` itself is put in eval mode and, on a CPU, given the fused blocks (`fuse_for_inference`).

    Example:
        >>> f = optimize_for_inference(create_model("mambaout_femto").eval())
        >>> logits = f(torch.randn(8, 3, 224, 224))  # doctest: +SKIP
    """
    device = next(model.parameters()).device
    model = model.eval()
    dtype = fast_dtype(device)
    if device.type == "cpu":
        fuse_for_inference(model)  # the fused blocks fall back to the reference under bf16 autocast
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    run = torch.compile(model) if compile else model

    @torch.inference_mode()
    def forward(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if dtype == torch.float32:
            return run(x)
        with torch.autocast(device.type, dtype=dtype):
            return run(x).float()

    if example is not None:
        forward(example)  # warm: compile, pick kernels
    return forward
