"""Pure-PyTorch selective scan: the fallback without numba, and the GPU path (device-agnostic tensor code).

The sequence is cut into chunks, laid out time-major. Inside a chunk all steps are solved at once by a Hillis-Steele
scan (log2(chunk) rounds of the associative step (a1, x1) o (a2, x2) = (a1 a2, a2 x1 + x2)), which needs only
products of decays in [0, 1] and sums: no division by a cumulative decay, so no overflow however long or stiff the
chunk. The chunk's end state carries into the next chunk. Under autograd each chunk is checkpointed, so the graph
keeps the inputs and one (batch, D, N) state per chunk, not the (batch, D, L, N) states."""

import torch
from torch.utils.checkpoint import checkpoint

from mambaout.ssm.pointwise import compute_dtype, skip_and_gate, step_size

# Steps per chunk. CPU: 16 wastes the fewest Hillis-Steele rounds (16: 3.0 s, 32: 3.5 s, 64: 4.4 s for forward +
# backward at batch 8, D 192, N 16, L 1024 on one core). GPU: longer chunks mean fewer kernel launches; 64 is a
# guess, not measured here.
CHUNK_CPU, CHUNK_GPU = 16, 64


def _scan_chunk(
    h0: torch.Tensor, u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk, time-major. h0: (b, G, H, N); u, dt: (K, b, G, H); A: (G, H, N); B, C: (K, b, G, 1, N).

    Returns y (K, b, G, H) and the state after the chunk (b, G, H, N).
    """
    a = torch.exp(dt[..., None] * A)  # (K, b, G, H, N)
    x = (dt * u)[..., None] * B
    shift = 1
    while shift < x.shape[0]:
        # step t absorbs the segment ending at t - shift: x_t += a_t x_{t-shift}, a_t *= a_{t-shift}
        x = torch.cat([x[:shift], x[shift:] + a[shift:] * x[:-shift]])
        a = torch.cat([a[:shift], a[shift:] * a[:-shift]])
        shift *= 2
    h = x + a * h0  # a is now the decay since the chunk start
    # clone: a view would keep this chunk's whole (K, b, G, H, N) h alive as the next checkpoint's saved input
    return (h * C).sum(-1), h[-1].clone()


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    initial_state: torch.Tensor | None = None,
    chunk: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``selective_scan_ref`` (inputs already validated by ``selective_scan``), ``initial_state``
    (batch, D, N) included; ``chunk`` steps per chunk, by default CHUNK_CPU or CHUNK_GPU by device.

    Example:
        >>> u = delta = torch.rand(2, 4, 10); A = -torch.rand(4, 3); B = C = torch.randn(2, 3, 10)
        >>> selective_scan_chunked(u, delta, A, B, C).shape
        torch.Size([2, 4, 10])
    """
    dtype_in = u.dtype
    compute = compute_dtype(u)
    batch, dim, seqlen = u.shape
    n_state = A.shape[1]
    B = B if B.dim() == 4 else B[:, None]
    C = C if C.dim() == 4 else C[:, None]
    groups = B.shape[1]
    per_group = dim // groups

    dt = step_size(delta, delta_bias, delta_softplus, compute)
    # Time-major and contiguous, so that a chunk is one contiguous block and every op streams memory; channel
    # d = g * per_group + i splits into (G, per_group) so that group g's B and C broadcast without copies.
    u_t = u.to(compute).permute(2, 0, 1).reshape(seqlen, batch, groups, per_group).contiguous()
    dt_t = dt.permute(2, 0, 1).reshape(seqlen, batch, groups, per_group).contiguous()
    A_g = A.to(compute).reshape(groups, per_group, n_state)
    B_t = B.to(compute).permute(3, 0, 1, 2)[:, :, :, None].contiguous()  # (L, b, G, 1, N)
    C_t = C.to(compute).permute(3, 0, 1, 2)[:, :, :, None].contiguous()

    chunk = chunk or (CHUNK_CPU if u.device.type == "cpu" else CHUNK_GPU)
    if initial_state is None:
        h = u_t.new_zeros(batch, groups, per_group, n_state)
    else:
        h = initial_state.to(compute).reshape(batch, groups, per_group, n_state)
    ys = []
    # split, not per-chunk slicing: autograd then concatenates the chunks' gradients once, instead of adding one
    # zero-padded full-length gradient per chunk (O(L^2) time, and gigabytes at L = 4096)
    for u_c, dt_c, B_c, C_c in zip(*(t.split(chunk) for t in (u_t, dt_t, B_t, C_t))):
        args = (h, u_c, dt_c, A_g, B_c, C_c)
        if torch.is_grad_enabled() and any(a.requires_grad for a in args):
            y, h = checkpoint(_scan_chunk, *args, use_reentrant=False)
        else:
            y, h = _scan_chunk(*args)
        ys.append(y)
    out = skip_and_gate(torch.cat(ys).reshape(seqlen, batch, dim).permute(1, 2, 0), u, D, z).to(dtype_in)
    return (out, h.reshape(batch, dim, n_state)) if return_last_state else out
