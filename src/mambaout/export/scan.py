"""The selective scan as a fixed graph of plain tensor ops, for exporters (ONNX, OpenVINO): no loop, no custom op.

The package's scan backends do not export with a dynamic sequence length: the fused one is a numba kernel, and the
chunked torch one runs a Python loop whose trip count is the length. Here the whole sequence is scanned at once by
a Hillis-Steele scan with a fixed number of rounds R: round r combines every step t with step t - 2^r,

    x_t <- x_t + a_t x_{t-2^r},   a_t <- a_t a_{t-2^r}     (a_t = exp(Δ_t A), x_t = Δ_t B_t u_t),

where the shifted tensor is 2^r fill values followed by the sequence without its last 2^r steps (slices counted
from either end), so the graph never reads the length and is right for every L <= 2^R. Only products of decays in
[0, 1] and sums appear, as in `mambaout.ssm.chunked`. The cost is R full-length (batch, L, D, N) passes instead of
one: this is a deployment format, not the fast CPU path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mambaout.mixers.ssm import ORDERS, SSMMixer
from mambaout.ssm.mamba import delta_B_C

DEFAULT_MAX_TOKENS = 256 * 256  # a 1024 x 1024 image at stride 4, MambaOut's finest stage


def rounds_for(max_tokens: int) -> int:
    """Scan rounds needed for sequences of up to `max_tokens` steps: ceil(log2(max_tokens)), at least 1."""
    return max(1, math.ceil(math.log2(max(2, max_tokens))))


def _shift(t: torch.Tensor, steps: int, fill: float) -> torch.Tensor:
    """t (batch, L, ...) delayed by `steps` along L, `fill` in front; length kept."""
    # t[:, :steps] has min(L, steps) rows and t[:, :-steps] max(L - steps, 0): together always L
    return torch.cat([torch.full_like(t[:, :steps], fill), t[:, :-steps]], dim=1)


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
    rounds: int = rounds_for(DEFAULT_MAX_TOKENS),
) -> torch.Tensor:
    """`mambaout.ssm.selective_scan`'s contract (without the last state), right for L <= 2**rounds; float32 inside.

    u, delta, z: (batch, D, L); A: (D, N); B, C: (batch, N, L) or (batch, G, N, L), channel d reading group
    d // (D // G); D, delta_bias: (D,).

    Example:
        >>> u, delta = torch.randn(2, 8, 100), torch.rand(2, 8, 100)
        >>> A, B, C = -torch.rand(8, 16), torch.randn(2, 16, 100), torch.randn(2, 16, 100)
        >>> selective_scan_unrolled(u, delta, A, B, C, rounds=7).shape
        torch.Size([2, 8, 100])
    """
    dtype_in = u.dtype
    batch, dim = u.shape[:2]
    B = B if B.dim() == 4 else B[:, None]
    C = C if C.dim() == 4 else C[:, None]
    groups, n_state = B.shape[1], A.shape[1]
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    # (batch, L, G, D/G, N) time-major per sample: group g's B and C broadcast over its channels
    u_t = u.float().transpose(1, 2).reshape(batch, -1, groups, dim // groups)
    dt_t = dt.transpose(1, 2).reshape(batch, -1, groups, dim // groups)
    B_t, C_t = (t.float().permute(0, 3, 1, 2)[:, :, :, None, :] for t in (B, C))  # (batch, L, G, 1, N)
    a = torch.exp(dt_t[..., None] * A.float().reshape(groups, dim // groups, n_state))
    x = (dt_t * u_t)[..., None] * B_t
    for r in range(rounds):
        x = x + a * _shift(x, 2**r, 0.0)
        if r + 1 < rounds:
            a = a * _shift(a, 2**r, 1.0)
    y = (x * C_t).sum(-1).flatten(2)  # (batch, L, D): the readout C_t h_t
    if D is not None:
        y = y + D.float() * u_t.flatten(2)
    if z is not None:
        y = y * F.silu(z.float().transpose(1, 2))
    return y.transpose(1, 2).to(dtype_in)


class UnrolledSSMMixer(nn.Module):
    """An `SSMMixer` whose scans run as one `selective_scan_unrolled`; shares (does not copy) the mixer's weights.

    The mixer's directions (4 for "cross") become the groups of a single scan, channels concatenated, so the graph
    holds one set of scan rounds per mixer, not one per direction: the same arithmetic, a quarter of the nodes.
    """

    def __init__(self, mixer: SSMMixer, rounds: int):
        super().__init__()
        self.mixer, self.rounds = mixer, rounds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixer = self.mixer
        x = mixer.act(mixer.conv(x))
        seqs = [ORDERS[name][0](x) for name in mixer.directions]  # each (batch, L, C)
        dts, Bs, Cs = zip(*(delta_B_C(seq, ssm.x_proj, ssm.dt_proj) for seq, ssm in zip(seqs, mixer.ssms)))
        ssms = mixer.ssms
        y = selective_scan_unrolled(
            torch.cat(seqs, -1).transpose(1, 2),
            torch.cat(dts, -1).transpose(1, 2),
            -torch.exp(torch.cat([s.A_log.float() for s in ssms])),
            torch.stack(Bs, 1).transpose(2, 3),
            torch.stack(Cs, 1).transpose(2, 3),
            torch.cat([s.D.float() for s in ssms]),
            delta_bias=torch.cat([s.dt_proj.bias.float() for s in ssms]),
            delta_softplus=True,
            rounds=self.rounds,
        ).transpose(1, 2)
        out = None
        for name, y_dir in zip(mixer.directions, y.chunk(len(ssms), dim=-1)):
            o = ORDERS[name][1](y_dir, x.shape)
            out = o if out is None else out + o
        return out
