"""The selective scan as a plain loop over time: slow, obviously right, the yardstick for every fast path.

Same semantics and shapes as ``mamba_ssm.ops.selective_scan_interface.selective_scan_ref``, plus an initial state.
"""

import torch

from mambaout.ssm.pointwise import ScanTensors, run_recurrence


def sequential(t: ScanTensors) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = exp(Δ_t A) h_{t-1} + Δ_t u_t B_t, one step at a time; returns (C_t h_t for every t, h_L)."""
    h, ys = t.h0, []
    # unbind splits each input once: indexing [t] per step would make autograd's backward O(L^2)
    for u, dt, B, C in zip(t.u.unbind(0), t.dt.unbind(0), t.B.unbind(0), t.C.unbind(0)):
        h = torch.exp(dt[..., None] * t.A) * h + (dt * u)[..., None] * B  # (batch, G, H, N)
        ys.append((h * C).sum(-1))
    return torch.stack(ys), h


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
    *,
    initial_state: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t,  y_t = C_t h_t + D u_t,  out = y * silu(z),  h_0 = initial_state.

    u, delta, z: (batch, D, L); A: (D, N) real; B, C: (batch, N, L) or (batch, G, N, L), channel d reading group
    d // (D // G); D, delta_bias: (D,); Δ = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias;
    initial_state: (batch, D, N), zeros if None.
    Computes in float32 (float64 for float64 inputs) and returns u's dtype; gradients come from autograd.
    Returns out (batch, D, L), or (out, last_state (batch, D, N)).

    Example:
        >>> u = delta = torch.rand(2, 4, 10); A = -torch.rand(4, 3); B = C = torch.randn(2, 3, 10)
        >>> selective_scan_ref(u, delta, A, B, C).shape
        torch.Size([2, 4, 10])
    """
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state)
    return run_recurrence(sequential, *args)
