"""Selective state space models on any machine: a fused CPU scan, a torch fallback, a reference, and Mamba.

- ``selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
  return_last_state=False, backend="auto", *, initial_state=None)``: ``mamba_ssm``'s ``selective_scan_fn`` contract,
  plus a state to start from (a previous chunk's last state continues its sequence). On CPU a fused numba
  kernel that never stores the (batch, D, L, N) states; elsewhere (or without numba) a chunked torch scan.
  ``backend`` = "auto" | "numba" | "torch" | "unrolled" | "ref".
- ``selective_scan_ref``: the sequential loop every backend is tested against.
- ``selective_scan_unrolled(..., rounds=R)``: the scan as a fixed graph right for every L <= 2^R, for exporters.
- ``SelectiveSSM(dim, d_state=16, ...)``: the building block for token mixers. (batch, L, C) -> (batch, L, C),
  input already convolved and activated; input-dependent Δ, B, C from ``x_proj``/``dt_proj``, D skip, optional
  gate ``z``; scans forward only (flip the sequence for other directions). ``step`` streams one token.
- ``Mamba(d_model, ...)``: the full block, ``mamba_ssm``'s constructor (in its order, ``use_fast_path`` included),
  parameter names and state_dict order. It and ``SelectiveSSM`` each own their parameters and call one function,
  ``selective_ssm(x, x_proj, dt_proj, A_log, D, z=None, ...)``: Δ/B/C projection, then the scan.
- ``scan_flops(batch, dim, seq_len, d_state)``: FLOPs of one scan (9·B·L·D·N + B·D·L), which FLOP counters
  cannot see (``FlopCounterMode`` runs through the fused op and counts 0 for it).

See docs/ssm.md for the kernel design and measured speed.
"""

from mambaout.ssm.mamba import Mamba, SelectiveSSM, selective_ssm
from mambaout.ssm.reference import selective_scan_ref
from mambaout.ssm.scan import BACKENDS, scan_flops, selective_scan
from mambaout.ssm.unrolled import selective_scan_unrolled

__all__ = [
    "BACKENDS",
    "Mamba",
    "SelectiveSSM",
    "scan_flops",
    "selective_scan",
    "selective_scan_ref",
    "selective_scan_unrolled",
    "selective_ssm",
]
