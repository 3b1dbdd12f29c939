"""What a run costs: parameters, MACs, latency and peak memory, measured the same way for every mixer.

- MACs: `mambaout.bench.cost.count_macs` (FlopCounterMode plus each mixer's declared `extra_macs`), per sample.
- Latency: the best (minimum) wall time of `repeats` calls after `warmup` calls, in inference mode, on the model's
  device (synchronised on CUDA). On a shared machine background load only ever adds time, so the minimum is the
  estimate of the call's own cost that moves least (timeit's advice).
- Peak memory: on CUDA the allocator's peak; on CPU the peak of live tensor storage that PyTorch's dispatcher
  sees while the call runs (`PeakMemory`): activations, gradients and temporaries, not the inputs and weights
  that existed before, nor scratch a fused kernel allocates outside PyTorch (the scan's per-thread L×N buffer).
  Resident-set counters would mostly show the allocator's caching instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakMemory(TorchDispatchMode):
    """Track the bytes of tensor storage created inside the `with` block and still alive; `peak` is the maximum.

    Example:
        >>> with PeakMemory() as mem:
        ...     y = torch.ones(1024, 256) * 2
        >>> mem.peak
        2097152
    """

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                ref = StorageWeakRef(storage)
                if ref.cdata not in self.live:
                    self.live[ref.cdata] = (ref, storage.nbytes())
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
        return out


def peak_memory_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak bytes of tensor memory `fn()` allocates (see the module docstring for what is counted)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    with PeakMemory() as mem:
        fn()
    return mem.peak


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
