"""SSM mixers as exporters trace them: every scan direction in one `selective_scan_unrolled` (`mambaout.ssm.unrolled`).

`exportable` (graph.py) swaps each `SSMMixer` for an `UnrolledSSMMixer` while a graph is traced; the scan itself is
the "unrolled" backend of `mambaout.ssm`, sized by the longest sequence the graph must handle (`max_tokens`).
"""

from __future__ import annotations

import torch
from torch import nn

from mambaout.mixers.ssm import ORDERS, SSMMixer
from mambaout.ssm.mamba import delta_B_C
from mambaout.ssm.unrolled import selective_scan_unrolled

DEFAULT_MAX_TOKENS = 256 * 256  # a 1024 x 1024 image at stride 4, MambaOut's finest stage


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
