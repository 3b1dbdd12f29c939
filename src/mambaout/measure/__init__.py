"""Measuring a model: parameter and MAC counts (`cost`), peak tensor memory (`memory`), wall time (`timing`) and
the machine it ran on (`machine`).

The bottom of the package: it imports nothing else of mambaout, so every command (bench, study, export, watch)
counts, times and weighs the same way, and their numbers can be set side by side.
"""

from mambaout.measure.cost import count_macs, count_params
from mambaout.measure.machine import machine_description, matmul_fma_rate
from mambaout.measure.memory import peak_memory_bytes
from mambaout.measure.timing import UpdateTimer, inference_latency_ms, interleaved, latency_ms, median_iqr, timed

__all__ = [
    "UpdateTimer",
    "count_macs",
    "count_params",
    "inference_latency_ms",
    "interleaved",
    "latency_ms",
    "machine_description",
    "matmul_fma_rate",
    "median_iqr",
    "peak_memory_bytes",
    "timed",
]
