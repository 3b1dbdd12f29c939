"""What a measurement ran on: the CPU's model name and instruction set, or the GPU's name, and what its arithmetic
can do.

Every figure a command prints or writes carries this line, so numbers from different machines are not mistaken for
each other (a bf16 path is fast on a CPU with native bf16 and slow on one without). `matmul_fma_rate` is the
arithmetic limit the benchmarks hold kernels and engines against.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("AMD EPYC 9B14"), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: torch.device | str = "cpu") -> str:
    """ "AMD EPYC, 2 cores, AVX512, 2 torch threads" on a CPU (the ISA torch's kernels use), the GPU's name on CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    isa = torch.backends.cpu.get_cpu_capability()
    return f"{cpu_name()}, {os.cpu_count()} cores, {isa}, {torch.get_num_threads()} torch threads"


def matmul_fma_rate(n: int = 1024, clock: Callable[[], float] = time.perf_counter) -> float:
    """float32 FMAs per second of one n x n matmul on torch's threads, timed by `clock` (wall time; pass
    `time.process_time` for CPU time, which a loaded machine slows less; over several threads that sums their CPU
    seconds, so the rate is per busy core, not the machine's): what this machine's arithmetic sustains."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    start = clock()
    torch.mm(a, b)
    return n**3 / (clock() - start)
