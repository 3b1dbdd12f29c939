"""Everything around the selective scan's recurrence, written once for the torch backends and ``SelectiveSSM.step``
(the fused kernel does all three pointwise parts inside its loop: Δ, the D skip and the gate).

Before the recurrence: the step size Δ = softplus(delta + delta_bias), and the inputs laid out time-major with the
channels split by B/C group (``ScanTensors``). After it: the D skip and the silu(z) gate (``skip_and_gate``).
``run_recurrence`` wraps a recurrence over ``ScanTensors`` into ``selective_scan``'s contract: the reference, the
chunked and the unrolled backends differ only in the recurrence they pass.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 for float64 inputs, float32 for every other dtype (bfloat16 and float16 included)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def step_size(
    delta: torch.Tensor,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Δ in ``dtype``: softplus(delta + delta_bias) if ``delta_softplus`` else delta + delta_bias.

    delta: (..., D, L); delta_bias: (D,), broadcast over L.

    Example:
        >>> step_size(torch.zeros(2, 3, 5), torch.zeros(3), delta_softplus=True)[0, 0, 0].item()  # log 2
        0.6931471824645996
    """
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    return F.softplus(dt) if delta_softplus else dt


def skip_and_gate(
    y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None
) -> torch.Tensor:
    """(y + D u) * silu(z) in y's dtype; y, u, z: (..., D, L), D: (D,), broadcast over L."""
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * u.to(y.dtype)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


class ScanTensors(NamedTuple):
    """A scan's inputs, time-major, contiguous, in the compute dtype; channel d = g * H + i is split into (G, H),
    H = D // G, so that group g's B and C broadcast over its channels without copies."""

    u: torch.Tensor  # (L, batch, G, H)
    dt: torch.Tensor  # (L, batch, G, H): Δ, bias and softplus applied
    A: torch.Tensor  # (G, H, N)
    B: torch.Tensor  # (L, batch, G, 1, N)
    C: torch.Tensor  # (L, batch, G, 1, N)
    h0: torch.Tensor  # (batch, G, H, N): the state before step 0


# (ScanTensors) -> (C_t h_t for every t: (L, batch, G, H), the last state h_L: (batch, G, H, N))
Recurrence = Callable[[ScanTensors], tuple[torch.Tensor, torch.Tensor]]


def run_recurrence(
    recurrence: Recurrence,
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    return_last_state: bool,
    initial_state: torch.Tensor | None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``selective_scan``'s contract (same arguments, inputs already validated) around ``recurrence``: lays the
    inputs out as ``ScanTensors``, runs it, then applies the D skip and the gate. Computes in float32 (float64 for
    float64 inputs) and returns u's dtype, and the last state (batch, D, N) in the compute dtype."""
    dtype_in = u.dtype
    compute = compute_dtype(u)
    batch, dim = u.shape[:2]
    n_state = A.shape[1]
    B = B if B.dim() == 4 else B[:, None]
    C = C if C.dim() == 4 else C[:, None]
    groups = B.shape[1]
    per_group = dim // groups
    dt = step_size(delta, delta_bias, delta_softplus, compute)
    # -1 for L, and zeros shaped after an input: a traced graph (the unrolled backend's export) holds no size
    u_t = u.to(compute).permute(2, 0, 1).reshape(-1, batch, groups, per_group).contiguous()
    if initial_state is None:
        h0 = torch.zeros_like(u_t[0])[..., None].expand(-1, -1, -1, n_state)
    else:
        h0 = initial_state.to(compute).reshape(batch, groups, per_group, n_state)
    tensors = ScanTensors(
        u=u_t,
        dt=dt.permute(2, 0, 1).reshape(-1, batch, groups, per_group).contiguous(),
        A=A.to(compute).reshape(groups, per_group, n_state),
        B=B.to(compute).permute(3, 0, 1, 2)[:, :, :, None].contiguous(),
        C=C.to(compute).permute(3, 0, 1, 2)[:, :, :, None].contiguous(),
        h0=h0,
    )
    y, h = recurrence(tensors)
    out = skip_and_gate(y.reshape(-1, batch, dim).permute(1, 2, 0), u, D, z).to(dtype_in)
    return (out, h.reshape(batch, dim, n_state)) if return_last_state else out
