"""The selective scan as a plain loop over time: slow, obviously right, the yardstick for every fast path.

Same semantics and shapes as ``mamba_ssm.ops.selective_scan_interface.selective_scan_ref``.
"""

import torch
import torch.nn.functional as F


def selective_scan_ref(
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
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t,  y_t = C_t h_t + D u_t,  out = y * silu(z).

    u, delta, z: (batch, D, L); A: (D, N) real; B, C: (batch, N, L) or (batch, G, N, L), channel d reading group
    d // (D // G); D, delta_bias: (D,); Δ = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias.
    Computes in float32 (float64 for float64 inputs) and returns u's dtype; gradients come from autograd.
    Returns out (batch, D, L), or (out, last_state (batch, D, N)).

    Example:
        >>> u = delta = torch.rand(2, 4, 10); A = -torch.rand(4, 3); B = C = torch.randn(2, 3, 10)
        >>> selective_scan_ref(u, delta, A, B, C).shape
        torch.Size([2, 4, 10])
    """
    dtype_in = u.dtype
    compute = torch.float64 if dtype_in == torch.float64 else torch.float32
    u, delta, A = u.to(compute), delta.to(compute), A.to(compute)
    batch, dim, seqlen = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    # (batch, G, N, L) -> one (N, L) slice per channel: (batch, D, N, L)
    B = B.to(compute) if B.dim() == 4 else B.to(compute)[:, None]
    C = C.to(compute) if C.dim() == 4 else C.to(compute)[:, None]
    B = B.repeat_interleave(dim // B.shape[1], dim=1)
    C = C.repeat_interleave(dim // C.shape[1], dim=1)

    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(seqlen):
        dt = delta[:, :, t, None]  # (batch, D, 1)
        h = torch.exp(dt * A) * h + dt * B[..., t] * u[:, :, t, None]
        ys.append((h * C[..., t]).sum(-1))
    out = torch.stack(ys, dim=-1)
    if D is not None:
        out = out + D.to(compute)[:, None] * u
    if z is not None:
        out = out * F.silu(z.to(compute))
    out = out.to(dtype_in)
    return (out, h) if return_last_state else out
