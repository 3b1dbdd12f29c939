"""Wall time of a call, measured one way for every command: the median over repeated calls.

Each call is timed alone with `time.perf_counter`, synchronised on CUDA before and after. The median is the
statistic everywhere (with the inter-quartile range as its spread where a command reports one): on a shared machine
it does not chase the rare quiet call as the minimum does, nor the rare stall as the mean does, so latencies from
`bench`, `study`, `export` and `watch` can be compared. Commands that time several candidates interleave them (one
call of each per round) so that background load falls on all alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import torch

__all__ = ["UpdateTimer", "inference_latency_ms", "interleaved", "latency_ms", "median_iqr", "timed"]

K = TypeVar("K")


def timed(fn: Callable[[], object], device: torch.device | str | None = None) -> float:
    """Seconds of one call of `fn()`, synchronised on CUDA before and after."""
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def median_iqr(xs: Sequence[float]) -> tuple[float, float]:
    """The median of `xs` and their inter-quartile range (0 for a single value)."""
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return statistics.median(xs), q[2] - q[0]


def interleaved(
    fns: Mapping[K, Callable[[], object]],
    repeats: int,
    warmup: int = 0,
    device: torch.device | str | None = None,
    settle: int = 0,
) -> dict[K, list[float]]:
    """Seconds of every call: `warmup` untimed rounds, then `repeats` rounds that each call every fn once, in turn.

    `settle`: untimed calls of a fn right before each of its timed ones. Runtimes with their own thread pools keep
    their threads spinning for a while after a call returns (ONNX Runtime's by default), which slows whatever runs
    next on the same cores: measured on 2 cores, OpenVINO timed right after ONNX Runtime ran its batch of 8 at
    1.58-1.62x timm's speed, and at 1.79-1.88x behind one settling call of its own.

    Example:
        >>> times = interleaved({"a": lambda: sum(range(100)), "b": lambda: sum(range(1000))}, repeats=5)
        >>> len(times["a"]), len(times["b"])
        (5, 5)
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[K, list[float]] = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            for _ in range(settle):
                fn()
            times[key].append(timed(fn, device))
    return times


def latency_ms(
    fn: Callable[[], object], repeats: int = 5, warmup: int = 1, device: torch.device | str = "cpu"
) -> float:
    """Median milliseconds of `fn()` over `repeats` calls after `warmup` untimed ones.

    Example:
        >>> latency_ms(lambda: torch.ones(100, 100) @ torch.ones(100, 100), repeats=3) > 0
        True
    """
    return 1e3 * statistics.median(interleaved({0: fn}, repeats, warmup, device)[0])


def inference_latency_ms(model: torch.nn.Module, inputs: torch.Tensor, repeats: int = 5, warmup: int = 1) -> float:
    """Median forward latency of `model(inputs)` in eval and inference mode (see `latency_ms`)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return latency_ms(lambda: model(inputs), repeats, warmup, inputs.device)
    finally:
        model.train(was_training)


class UpdateTimer:
    """Mixin for a task of the engine's driver (`mambaout.engine.run.Task`): the seconds between consecutive
    updates, which is what a training benchmark times (the driver's loss `.item()` synchronises the device once per
    update, so the intervals are steady-state update times); `warmup` first updates are left out of `update_seconds`
    and CUDA's peak-memory counter restarts after them.

    Example:
        >>> class Bench(UpdateTimer, Task): ...  # doctest: +SKIP
        >>> task = Bench(); run(task, config); median_iqr(task.update_seconds)  # doctest: +SKIP
    """

    warmup: int = 0

    def on_start(self, run) -> None:
        self._times: list[float] = []
        self._last = time.perf_counter()

    def on_update(self, run, loss: float) -> None:
        now = time.perf_counter()
        self._times.append(now - self._last)
        self._last = now
        if len(self._times) == self.warmup and run.runtime.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(run.runtime.device)

    @property
    def update_seconds(self) -> list[float]:
        """Seconds of each update after the warm-up."""
        return self._times[self.warmup :]
