"""The selective scan's pointwise parts, written once for every backend and for ``SelectiveSSM.step``.

Before the recurrence: the step size Δ = softplus(delta + delta_bias). After it: the D skip and the silu(z) gate
(the fused kernel does those two inside its loop; the torch backends and ``step`` call ``skip_and_gate``).
"""

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
