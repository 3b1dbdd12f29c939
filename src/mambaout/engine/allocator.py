"""Keep the memory a process frees for its next step, instead of handing it back to the OS and faulting it in again.

A training step on the CPU allocates and frees the same few-megabyte activations every step. glibc's malloc serves
blocks above its mmap threshold with fresh mappings and trims the top of its heap back to the OS once enough is free,
so a step can start on pages the kernel must fault in (zeroed) again. Measured on a 2-core Intel Xeon, one thread,
PyTorch, oneDNN, MKL and numba capped at AVX2, selective copying's SSM training step (batch 64, 300 steps, three
alternating pairs of processes): 459,000-1,179,000 page faults a run by default, ~163,000 (those of the imports)
with `keep_freed_memory()`; 34.7-37.7 against 34.1-34.5 ms a step. In one profile the bias copy that starts the
first linear's (2304, 340) output took 1.07 ms, 5x its cost on pages already mapped. The whole `mambaout study`, same
caps: system time 13.9-15.6 s against 5.2-5.6 s (page faults of the main process and the workers 10.5 M against
2.8 M), its wall time within the host's drift (3.88-4.06 against 3.79-4.06 min), the same results to the last digit.

The price is that a process keeps the memory of its largest step until it exits (what PyTorch's CUDA allocator does
on a GPU). Only the `mambaout` command and the study's worker processes call it; a program that imports mambaout
keeps its own allocator settings.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit systems (4 MiB x sizeof(long)); blocks above it keep their own
# mappings, which is what a block that size should have.
MMAP_THRESHOLD_MAX = 32 << 20
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve blocks up to 32 MiB from its heap and to keep up to 1 GiB of freed heap instead of
    trimming it; True if it took both settings, False elsewhere (another libc, another OS: nothing changes).

    Example:
        >>> keep_freed_memory() in (True, False)
        True
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries without glibc's name or function
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) & bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
