"""Selective scan, forward + backward: our fused CPU kernel, our torch fallback, the sequential reference and mambapy's
parallel scan, side by side at batch 8, D 192, N 16, L 4096 (flags change them).

    python benchmarks/bench_scan.py                       # table; --json out.json also writes the numbers
    python benchmarks/bench_scan.py --seqlen 1024 --methods fused torch
    python benchmarks/bench_scan.py --limit               # the fused kernel against this machine's arithmetic limit

Every method gets the same leaves in mambapy's layout (x, delta: (batch, L, D); A: (D, N); B, C: (batch, L, N);
D: (D,)), all requiring grad, and computes y = scan(...) then y.sum().backward(); ours read them through transposed
views, as ``SelectiveSSM`` does. mambapy's time includes building its (batch, L, D, N) deltaA and deltaB·u inputs:
that is ``mambapy.mamba.MambaBlock.selective_scan``, what a user of its pscan pays.

Time: one process, methods interleaved round by round, median wall time. Peak memory: each method runs once more in
a fresh subprocess and reports its peak resident set size (VmHWM) minus its resident size right before the call:
everything the call keeps live at once (tensors, numba scratch). tracemalloc cannot see torch's allocations, hence
processes; glibc is told to return freed blocks at once (MALLOC_MMAP_THRESHOLD_), else RSS also counts dead
temporaries. Linux only (reads /proc/self/status).

``--limit``: the fused kernel's state updates per second (one update: one (batch, step, channel, state) element of
h), forward and forward + backward, at the study's small sizes and at the flags' size, against the limit of this
machine's arithmetic: the float32 FMA rate of a 1024 x 1024 matmul on the same threads. Matmul and scans alternate
round by round in one process and every figure is the median of process CPU time, so a loaded machine slows both
sides alike. It prints limit / (updates/s x 10): the factor by which the scan falls short of a kernel that spent ~10
FMA-equivalents per update (exp(Δ A) ~ 6, the update and the readout 2 each) at the matmul's rate.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch

from mambaout.measure import matmul_fma_rate
from mambaout.ssm import selective_scan, selective_scan_ref

# (batch, D, N, L) of the study's scans (one thread): selective copying's two layers (width 64, 36 tokens, batch 64),
# digits' first stage (mambaout_pico, width 16, 8 x 8 tokens, batch 64).
STUDY_SIZES = ((64, 64, 16, 36), (64, 16, 16, 64))
FMA_EQUIVALENTS = 10


def make_inputs(batch: int, dim: int, seqlen: int, n_state: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    inputs = {
        "x": torch.randn(batch, seqlen, dim, generator=g),
        "delta": torch.rand(batch, seqlen, dim, generator=g) * 0.1 + 1e-3,
        "A": -torch.arange(1, n_state + 1, dtype=torch.float32).repeat(dim, 1),
        "B": torch.randn(batch, seqlen, n_state, generator=g),
        "C": torch.randn(batch, seqlen, n_state, generator=g),
        "D": torch.ones(dim),
    }
    return {k: v.requires_grad_() for k, v in inputs.items()}


def ours(backend: str):
    scan = selective_scan_ref if backend == "ref" else selective_scan
    kwargs = {} if backend == "ref" else {"backend": backend}

    def run(x, delta, A, B, C, D):
        t = lambda v: v.transpose(1, 2)  # noqa: E731  (batch, L, X) -> (batch, X, L) views
        return scan(t(x), t(delta), A, t(B), t(C), D, **kwargs)

    return run


def mambapy_pscan(x, delta, A, B, C, D):
    from mambapy.mamba import MambaBlock

    return MambaBlock.selective_scan(None, x, delta, A, B, C, D)


METHODS = {
    "fused": ("ours, numba kernel (default on CPU)", ours("numba")),
    "torch": ("ours, chunked torch fallback", ours("torch")),
    "ref": ("sequential reference loop", ours("ref")),
    "mambapy": ("mambapy pscan (builds B x L x D x N inputs)", mambapy_pscan),
}


def forward_backward(method: str, inputs: dict[str, torch.Tensor]) -> float:
    for v in inputs.values():
        v.grad = None
    start = time.perf_counter()
    METHODS[method][1](**inputs).sum().backward()
    return time.perf_counter() - start


def memory_kb(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, from /proc (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory_child(method: str, args: argparse.Namespace) -> None:
    """Runs in a fresh process: print the peak RSS growth of one forward + backward, in bytes."""
    forward_backward(method, make_inputs(2, 8, 64, args.state))  # load numba's cache / import mambapy
    inputs = make_inputs(args.batch, args.dim, args.seqlen, args.state)
    before = memory_kb("VmRSS")
    forward_backward(method, inputs)
    # VmHWM, not getrusage's ru_maxrss: the latter survives exec and would report the parent's peak
    print((memory_kb("VmHWM") - before) * 1024)


def peak_memory(method: str, args: argparse.Namespace) -> int:
    cmd = [sys.executable, __file__, "--memory-of", method, "--threads", str(args.threads)]
    for flag in ("batch", "dim", "state", "seqlen"):
        cmd += [f"--{flag}", str(getattr(args, flag))]
    # glibc keeps freed blocks under its adaptive mmap threshold in the heap, so RSS would count dead temporaries
    # (4 GB of them for the torch path); a fixed 64 KiB threshold returns every freed tensor, for every method alike
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return int(result.stdout.strip().splitlines()[-1])


def kernel_seconds(batch: int, dim: int, n_state: int, seqlen: int) -> tuple[float, float]:
    """CPU seconds of one fused forward and of one forward + backward, canonical layout, with D and z."""
    from mambaout.ssm import fused

    g = torch.Generator().manual_seed(0)
    u, z = torch.randn(batch, seqlen, dim, generator=g), torch.randn(batch, seqlen, dim, generator=g)
    delta = torch.rand(batch, seqlen, dim, generator=g) * 0.1 + 1e-3
    A_T = -torch.arange(1, n_state + 1, dtype=torch.float32)[:, None].repeat(1, dim)
    B, C = (torch.randn(batch, 1, seqlen, n_state, generator=g) for _ in range(2))
    D = torch.ones(dim)
    start = time.process_time()
    out, _, checkpoints = fused.selective_scan_fwd(u, delta, A_T, B, C, D, z)
    forward = time.process_time()
    fused.selective_scan_bwd(u, delta, A_T, B, C, D, z, checkpoints, torch.ones_like(out), None)
    return forward - start, time.process_time() - start


def limit_report(args: argparse.Namespace) -> None:
    sizes = [*STUDY_SIZES, (args.batch, args.dim, args.state, args.seqlen)]
    for size in sizes:
        kernel_seconds(*[min(s, 8) for s in size[:3]], 64)  # compile or load numba's cache
    limits, times = [], {s: [] for s in sizes}
    for round_ in range(args.repeats + 1):
        limits.append(matmul_fma_rate(clock=time.process_time))
        for size in sizes:
            # the small sizes are over in milliseconds: enough calls per round to outlast the clock's resolution
            calls = max(1, int(2e7 // math.prod(size)))
            runs = [kernel_seconds(*size) for _ in range(calls)]
            if round_ > 0:
                times[size].append(tuple(sum(r[i] for r in runs) / calls for i in (0, 1)))
    limit = statistics.median(limits)
    cores, load = os.cpu_count(), os.getloadavg()[0]
    print(
        f"fused selective scan against the arithmetic limit: {args.threads} thread(s), torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, load {load:.1f} on {cores} cores, median of {args.repeats}"
    )
    print(f"limit: float32 matmul 1024^3 at {limit / 1e9:.1f} G FMA/s (CPU time)")
    print(f"{'batch D N L':<18} {'fwd G upd/s':>12} {'limit ratio':>12} {'fwd+bwd G upd/s':>16} {'limit ratio':>12}")
    for size in sizes:
        updates = math.prod(size)
        row = f"{' '.join(map(str, size)):<18}"
        for i, width in ((0, 12), (1, 16)):
            rate = updates / statistics.median(t[i] for t in times[size])
            row += f" {rate / 1e9:{width}.2f} {limit / (rate * FMA_EQUIVALENTS):12.1f}"
        print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-memory", action="store_true", help="skip the per-method memory subprocesses")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--limit", action="store_true", help="report the fused kernel against the matmul FMA rate")
    parser.add_argument("--memory-of", choices=list(METHODS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_of:
        return peak_memory_child(args.memory_of, args)
    if args.limit:
        return limit_report(args)

    inputs = make_inputs(args.batch, args.dim, args.seqlen, args.state)
    times = {m: [] for m in args.methods}
    for round_ in range(args.repeats + 1):
        order = args.methods[round_ % len(args.methods) :] + args.methods[: round_ % len(args.methods)]
        for m in order:
            elapsed = forward_backward(m, inputs)
            if round_ > 0:  # round 0 warms up: numba cache load, allocator, thread pools
                times[m].append(elapsed)
    results = {m: {"label": METHODS[m][0], "times_s": times[m], "median_s": statistics.median(times[m])} for m in times}
    if not args.no_memory:
        for m in results:
            results[m]["peak_bytes"] = peak_memory(m, args)

    states_mb = args.batch * args.dim * args.seqlen * args.state * 4 / 2**20
    print(
        f"selective scan forward + backward, batch {args.batch}, D {args.dim}, N {args.state}, L {args.seqlen}, "
        f"{args.threads} threads, median of {args.repeats}; one float32 (batch, D, L, N) tensor = {states_mb:.0f} MB"
    )
    base = results.get("fused")
    print(f"{'method':<48} {'time s':>9} {'peak MB':>9} {'fused is x faster':>18}")
    for r in results.values():
        peak = f"{r['peak_bytes'] / 2**20:9.0f}" if "peak_bytes" in r else f"{'-':>9}"
        ratio = f"{r['median_s'] / base['median_s']:18.1f}" if base else ""
        print(f"{r['label']:<48} {r['median_s']:9.3f} {peak} {ratio}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
