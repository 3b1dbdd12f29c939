"""Pure-PyTorch selective scan: the fallback without numba, and the GPU path (device-agnostic tensor code).

The sequence is cut into chunks of CHUNK steps. Inside a chunk all steps are solved at once by a Hillis-Steele scan
(log2(CHUNK) rounds of the associative step (a1, x1) o (a2, x2) = (a1 a2, a2 x1 + x2)), which needs only products
of decays in [0, 1] and sums: no division by a cumulative decay, so no overflow however long or stiff the chunk.
The chunk's end state carries into the next chunk. Under autograd each chunk is checkpointed, so the graph keeps
the inputs and one (batch, D, N) state per chunk, not the (batch, D, L, N) states.
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

CHUNK = 64


def _scan_chunk(
    h0: torch.Tensor, u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk. h0: (b, G, H, N); u, dt: (b, G, H, K); A: (G, H, N); B, C: (b, G, 1, K, N).

    Returns y (b, G, H, K) and the state after the chunk (b, G, H, N).
    """
    a = torch.exp(dt[..., None] * A[:, :, None, :])  # (b, G, H, K, N)
    x = (dt * u)[..., None] * B
    steps = x.shape[-2]
    shift = 1
    while shift < steps:
        # element t absorbs the segment ending at t - shift: x_t += a_t x_{t-shift}, a_t *= a_{t-shift}
        x = x + a * F.pad(x[..., :-shift, :], (0, 0, shift, 0))
        a = a * F.pad(a[..., :-shift, :], (0, 0, shift, 0), value=1.0)
        shift *= 2
    h = x + a * h0[..., None, :]  # a is now the decay from the chunk start
    return (h * C).sum(-1), h[..., -1, :]


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
    chunk: int = CHUNK,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``selective_scan_ref`` (inputs already validated by ``selective_scan``).

    Example:
        >>> u = delta = torch.rand(2, 4, 10); A = -torch.rand(4, 3); B = C = torch.randn(2, 3, 10)
        >>> selective_scan_chunked(u, delta, A, B, C).shape
        torch.Size([2, 4, 10])
    """
    dtype_in = u.dtype
    compute = torch.float64 if dtype_in == torch.float64 else torch.float32
    batch, dim, seqlen = u.shape
    n_state = A.shape[1]
    B = B if B.dim() == 4 else B[:, None]
    C = C if C.dim() == 4 else C[:, None]
    groups = B.shape[1]
    per_group = dim // groups

    dt = delta.to(compute)
    if delta_bias is not None:
        dt = dt + delta_bias.to(compute)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    # channel d = g * per_group + i: (b, D, L) -> (b, G, per_group, L), so B and C broadcast without copies
    u_g = u.to(compute).reshape(batch, groups, per_group, seqlen)
    dt_g = dt.reshape(batch, groups, per_group, seqlen)
    A_g = A.to(compute).reshape(groups, per_group, n_state)
    B_g = B.to(compute).transpose(-1, -2)[:, :, None]  # (b, G, 1, L, N)
    C_g = C.to(compute).transpose(-1, -2)[:, :, None]

    h = u_g.new_zeros(batch, groups, per_group, n_state)
    ys = []
    for t0 in range(0, seqlen, chunk):
        t = slice(t0, t0 + chunk)
        args = (h, u_g[..., t], dt_g[..., t], A_g, B_g[..., t, :], C_g[..., t, :])
        if torch.is_grad_enabled() and any(a.requires_grad for a in args):
            y, h = checkpoint(_scan_chunk, *args, use_reentrant=False)
        else:
            y, h = _scan_chunk(*args)
        ys.append(y)
    out = torch.cat(ys, dim=-1).reshape(batch, dim, seqlen)
    if D is not None:
        out = out + D.to(compute)[:, None] * u.to(compute)
    if z is not None:
        out = out * F.silu(z.to(compute))
    out = out.to(dtype_in)
    return (out, h.reshape(batch, dim, n_state)) if return_last_state else out
