"""The selective scan as a plain loop over time: slow, obviously right, the yardstick for every fast path.

Same semantics and shapes as ``mamba_ssm.ops.selective_scan_interface.selective_scan_ref``.
"""

import torch

from mambaout.ssm.pointwise import compute_dtype, skip_and_gate, step_size


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
    dtype_in = u.dtype
    compute = compute_dtype(u)
    batch, dim, seqlen = u.shape
    n_state = A.shape[1]
    B = B if B.dim() == 4 else B[:, None]
    C = C if C.dim() == 4 else C[:, None]
    groups = B.shape[1]
    delta = step_size(delta, delta_bias, delta_softplus, compute)
    # channel d = g * (D // G) + i: (batch, D, ...) -> (batch, G, D // G, ...), so group g's B and C broadcast
    us = u.to(compute).reshape(batch, groups, dim // groups, seqlen).unbind(-1)
    deltas = delta.reshape(batch, groups, dim // groups, seqlen).unbind(-1)
    A = A.to(compute).reshape(groups, dim // groups, n_state)
    Bs, Cs = B.to(compute).unbind(-1), C.to(compute).unbind(-1)  # L tensors of (batch, G, N)
    # unbind splits each input once: indexing [..., t] per step would make autograd's backward O(L^2)

    if initial_state is None:
        h = A.new_zeros(batch, groups, dim // groups, n_state)
    else:
        h = initial_state.to(compute).reshape(batch, groups, dim // groups, n_state)
    ys = []
    for t in range(seqlen):
        dt = deltas[t][..., None]  # (batch, G, D // G, 1)
        h = torch.exp(dt * A) * h + dt * Bs[t][:, :, None] * us[t][..., None]
        ys.append((h * Cs[t][:, :, None]).sum(-1))
    out = skip_and_gate(torch.stack(ys, dim=-1).reshape(batch, dim, seqlen), u, D, z).to(dtype_in)
    h = h.reshape(batch, dim, n_state)
    return (out, h) if return_last_state else out
