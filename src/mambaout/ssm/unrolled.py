"""The selective scan as a fixed graph of plain tensor ops, for exporters (ONNX, OpenVINO): no loop, no custom op.

The fused backend is a numba kernel, and the chunked torch one runs a Python loop whose trip count is the length, so
neither exports with a dynamic sequence length. Here the whole sequence is one chunk of ``chunked.scan_chunk``
solved by a fixed number of Hillis-Steele rounds R (round r combines every step t with step t - 2^r); its slices are
counted from either end, so the graph never reads the length and is right for every L <= 2^R. Only products of
decays in [0, 1] and sums appear. The cost is R full-length (batch, L, D, N) passes instead of one: this is a
deployment format, not the fast CPU path. As ``selective_scan(..., backend="unrolled")`` it runs with just enough
rounds for the given length, and is tested against the reference like every backend.
"""

import math
from functools import partial

import torch

from mambaout.ssm.chunked import scan_chunk
from mambaout.ssm.pointwise import ScanTensors, run_recurrence


def rounds_for(max_tokens: int) -> int:
    """Scan rounds needed for sequences of up to `max_tokens` steps: ceil(log2(max_tokens)), at least 1."""
    return max(1, math.ceil(math.log2(max(2, max_tokens))))


def unrolled(t: ScanTensors, rounds: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence as one chunk solved in ``rounds`` rounds; a ``Recurrence`` once ``rounds`` is bound."""
    return scan_chunk(t.h0, t.u, t.dt, t.A, t.B, t.C, rounds)


def selective_scan_unrolled(
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
    rounds: int,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`mambaout.ssm.selective_scan`'s contract, right for L <= 2**rounds (``rounds_for(max_tokens)``); float32
    inside (float64 for float64).

    u, delta, z: (batch, D, L); A: (D, N); B, C: (batch, N, L) or (batch, G, N, L), channel d reading group
    d // (D // G); D, delta_bias: (D,); initial_state: (batch, D, N).

    Example:
        >>> u, delta = torch.randn(2, 8, 100), torch.rand(2, 8, 100)
        >>> A, B, C = -torch.rand(8, 16), torch.randn(2, 16, 100), torch.randn(2, 16, 100)
        >>> selective_scan_unrolled(u, delta, A, B, C, rounds=7).shape
        torch.Size([2, 8, 100])
    """
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state)
    return run_recurrence(partial(unrolled, rounds=rounds), *args)
