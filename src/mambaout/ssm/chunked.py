"""Pure-PyTorch selective scan: the fallback without numba, and the GPU path (device-agnostic tensor code).

The sequence is cut into chunks, laid out time-major. Inside a chunk all steps are solved at once by a Hillis-Steele
scan (log2(chunk) rounds of the associative step (a1, x1) o (a2, x2) = (a1 a2, a2 x1 + x2)), which needs only
products of decays in [0, 1] and sums: no division by a cumulative decay, so no overflow however long or stiff the
chunk. The chunk's end state carries into the next chunk. Under autograd each chunk is checkpointed, so the graph
keeps the inputs and one (batch, D, N) state per chunk, not the (batch, D, L, N) states. ``scan_chunk`` is also the
exported scan (``unrolled.py``): one chunk as long as the sequence, with a fixed number of rounds."""

import torch
from torch.utils.checkpoint import checkpoint

from mambaout.ssm.pointwise import ScanTensors

# Steps per chunk. CPU: 16 wastes the fewest Hillis-Steele rounds (16: 3.0 s, 32: 3.5 s, 64: 4.4 s for forward +
# backward at batch 8, D 192, N 16, L 1024 on one core). GPU: longer chunks mean fewer kernel launches, and more
# memory (a chunk's (K, b, D, N) intermediates live at once). Forward + backward on one H200 (torch 2.11, fp32,
# benchmarks/check_gpu.py, chunk 64 / 128 / 256 / 512): b8 D192 N16 L4096 314 / 184 / 103 / 76 ms; b8 D768 L1024
# 90 / 63 / 60 / 64 ms; b64 D64 L256 25 / 13 / 11 / 12 ms. 256 is within 5 % of the best at the two shorter
# shapes and 3x faster than 64 at L 4096, at 2.4-4.3x chunk 64's peak memory (655 MiB, 2.1 GiB, 1.2 GiB).
CHUNK_CPU, CHUNK_GPU = 16, 256


def scan_chunk(
    h0: torch.Tensor,
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    rounds: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of K steps, time-major. h0: (b, G, H, N); u, dt: (K, b, G, H); A: (G, H, N); B, C: (K, b, G, 1, N).

    ``rounds`` Hillis-Steele rounds (round r combines step t with step t - 2^r) solve chunks of up to 2^rounds steps;
    by default just enough for K. Every slice is counted from an end of the chunk, so the same ops are right for any
    K <= 2^rounds: a traced graph does not depend on K. Returns y = C_t h_t (K, b, G, H) and h after the chunk.
    """
    rounds = (int(u.shape[0]) - 1).bit_length() if rounds is None else rounds  # int(): traced shapes are tensors
    a = torch.exp(dt[..., None] * A)  # (K, b, G, H, N)
    x = (dt * u)[..., None] * B
    x = torch.cat([x[:1] + a[:1] * h0, x[1:]])  # step 0 starts from h0: h_0 = a_0 h0 + x_0
    for r in range(rounds):
        shift = 2**r
        # step t absorbs the segment ending at t - shift: x_t += a_t x_{t-shift}, a_t *= a_{t-shift}
        x = torch.cat([x[:shift], x[shift:] + a[shift:] * x[:-shift]])
        if r + 1 < rounds:  # the last round's a would go unused
            a = torch.cat([a[:shift], a[shift:] * a[:-shift]])
    # clone: a view would keep this chunk's whole (K, b, G, H, N) h alive as the next checkpoint's saved input
    return (x * C).sum(-1), x[-1].clone()


def chunked(t: ScanTensors, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence chunk by chunk (``chunk`` steps, by default CHUNK_CPU or CHUNK_GPU by device), each chunk
    checkpointed under autograd; returns (C_t h_t for every t, h_L). A ``Recurrence`` for ``run_recurrence``."""
    chunk = chunk or (CHUNK_CPU if t.u.device.type == "cpu" else CHUNK_GPU)
    h, ys = t.h0, []
    # split, not per-chunk slicing: autograd then concatenates the chunks' gradients once, instead of adding one
    # zero-padded full-length gradient per chunk (O(L^2) time, and gigabytes at L = 4096)
    for u_c, dt_c, B_c, C_c in zip(*(x.split(chunk) for x in (t.u, t.dt, t.B, t.C))):
        args = (h, u_c, dt_c, t.A, B_c, C_c)
        if torch.is_grad_enabled() and any(a.requires_grad for a in args):
            y, h = checkpoint(scan_chunk, *args, use_reentrant=False)
        else:
            y, h = scan_chunk(*args)
        ys.append(y)
    return torch.cat(ys), h
