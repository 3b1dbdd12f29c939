"""What a run costs: parameters, MACs, latency and peak memory, measured the same way for every mixer.

- MACs: `mambaout.bench.cost.count_macs` (FlopCounterMode plus each mixer's declared `extra_macs`), per sample.
- Latency: the best (minimum) wall time of `repeats` calls after `warmup` calls, in inference mode, on the model's
  device (synchronised on CUDA). On a shared machine background load only ever adds time, so the minimum is the
  estimate of the call's own cost that moves least (timeit's advice).
- Peak memory: on CUDA the allocator's peak; on CPU the peak of live tensor storage that PyTorch's dispatcher
  sees while the call runs (`mambaout.bench.memory`): activations, gradients and temporaries, not the inputs and weights
  that existed before, nor scratch a fused kernel allocates outside PyTorch (the scan's per-thread L×N buffer).
  Resident-set counters would mostly show the allocator's caching instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from mambaout.bench.memory import peak_memory_bytes

__all__ = ["inference_latency_ms", "latency_ms", "peak_memory_bytes"]


def latency_ms(
    fn: Callable[[], object], repeats: int = 5, warmup: int = 1, device: torch.device | str = "cpu"
) -> float:
    """Best (minimum) milliseconds of `fn()` over `repeats` calls after `warmup` untimed ones."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *a: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def inference_latency_ms(model: torch.nn.Module, inputs: torch.Tensor, repeats: int = 5, warmup: int = 1) -> float:
    """Best forward latency of `model(inputs)` in eval and inference mode (see `latency_ms`)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return latency_ms(lambda: model(inputs), repeats, warmup, inputs.device)
    finally:
        model.train(was_training)
