"""Peak tensor memory of a piece of code, on any device.

On CUDA the allocator's own counter (`torch.cuda.max_memory_allocated`) is the truth. The CPU allocator keeps no
such counter, so `TensorMemoryTracker` watches every tensor storage created under it (a TorchDispatchMode) and
frees its bytes when the storage dies: the peak of live bytes is what the code needed beyond what already existed
(weights and inputs are not counted). It slows the code it watches, so measure memory and time in separate runs.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class TensorMemoryTracker(TorchDispatchMode):
    """Track live and peak bytes of tensor storages allocated inside the `with` block.

    Example:
        >>> with TensorMemoryTracker() as mem:
        ...     y = torch.ones(1000, 1000) * 2
        >>> mem.peak_bytes
        4000000
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current_bytes = 0
        self.peak_bytes = 0

    def _release(self, key: int, nbytes: int) -> None:
        if self.live.pop(key, None) is not None:
            self.current_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.is_meta:
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or key in self.live:
                continue
            self.live[key] = nbytes
            self.current_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)
            weakref.finalize(storage, self._release, key, nbytes)
        return out


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device | str = "cpu") -> int:
    """Peak bytes of tensors allocated while `fn()` runs (beyond what was allocated before)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    with TensorMemoryTracker() as tracker:
        fn()
    return tracker.peak_bytes
