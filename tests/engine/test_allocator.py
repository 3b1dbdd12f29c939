"""`keep_freed_memory`: the memory a step frees stays mapped for the next step instead of being faulted in again."""

import subprocess
import sys
import textwrap

import pytest

# A step's pattern through the C allocator itself (no torch in the process, so nothing else moves glibc's thresholds):
# three 12 MiB blocks alive at once, written, freed, and again; minor page faults a step after three warm-up steps.
STEPS = textwrap.dedent(
    """
    import ctypes, resource, sys
    if sys.argv[1] == "keep":
        from mambaout.engine.allocator import keep_freed_memory
        assert keep_freed_memory()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 12 << 20
    def step():
        blocks = [libc.malloc(size) for _ in range(3)]
        for b in blocks:
            ctypes.memset(b, 1, size)
        for b in blocks:
            libc.free(b)
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
    """
)


def faults_a_step(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
    return float(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="it tunes glibc's malloc, on Linux")
def test_kept_memory_is_not_faulted_in_again_at_every_step_as_glibc_does_by_default():
    # glibc by default: the blocks come from its heap once their size is known, but 36 MiB freed at its top is
    # over its trim threshold (twice the largest block), so it goes back to the OS and returns page by page
    assert faults_a_step("default") > 8000  # measured 9,184: 36 MiB (9,216 pages) less the 128 KiB it keeps
    assert faults_a_step("keep") < 100
