"""The public selective scan: checks inputs once, then runs one of four interchangeable backends.

- "numba": the fused CPU kernel (``fused.py``), never stores (batch, D, L, N); float32 inside.
- "torch": chunked scan in plain tensor ops (``chunked.py``); any device, the GPU path.
- "unrolled": the whole sequence in log2(L) Hillis-Steele rounds (``unrolled.py``): what exporters trace.
- "ref": the sequential loop (``reference.py``); slow, for checking.
- "auto" (default): "numba" for CPU tensors when numba imports, otherwise "torch"; and "torch" whenever the call is
  being traced or exported (``torch.jit.trace``, ONNX export, ``torch.export``), so that the graph holds plain tensor
  ops that any runtime can execute rather than the ``mambaout::selective_scan_fwd`` custom op. ``torch.compile``
  keeps the fused kernel: it runs the custom op as one opaque node.
"""

from functools import partial

import torch

from mambaout.engine.runtime import exporting
from mambaout.errors import UserError
from mambaout.ssm.chunked import chunked
from mambaout.ssm.pointwise import run_recurrence
from mambaout.ssm.reference import sequential
from mambaout.ssm.unrolled import rounds_for, unrolled

try:
    from mambaout.ssm import fused
except ImportError:  # numba missing: the torch backend takes over
    fused = None

BACKENDS = ("auto", "numba", "torch", "unrolled", "ref")


def _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state) -> None:
    """One UserError (a ValueError) sentence for each shape or dtype mistake a caller can make."""
    tensors = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
    tensors["initial_state"] = initial_state
    for name, t in tensors.items():
        if t is None:
            continue
        if t.is_complex():
            raise UserError(f"selective_scan: complex {name} is not supported; pass real tensors (A of shape (D, N)).")
        if not t.is_floating_point():
            raise UserError(f"selective_scan: {name} must be a floating-point tensor, got {t.dtype}.")
    if u.dim() != 3 or u.shape[-1] == 0:
        raise UserError(f"selective_scan: u must have shape (batch, D, L) with L >= 1, got {tuple(u.shape)}.")
    batch, dim, seqlen = u.shape
    if delta.shape != u.shape:
        raise UserError(f"selective_scan: delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}.")
    if A.dim() != 2 or A.shape[0] != dim:
        raise UserError(f"selective_scan: A must have shape (D, N) = ({dim}, N), got {tuple(A.shape)}.")
    n_state = A.shape[1]
    groups = []
    for name, t in (("B", B), ("C", C)):
        if t.dim() not in (3, 4) or t.shape[0] != batch or t.shape[-2:] != (n_state, seqlen):
            raise UserError(
                f"selective_scan: {name} must have shape (batch, N, L) = ({batch}, {n_state}, {seqlen}) or "
                f"(batch, G, N, L), got {tuple(t.shape)}."
            )
        g = 1 if t.dim() == 3 else t.shape[1]
        if g == 0 or dim % g != 0:
            raise UserError(f"selective_scan: {name} has {g} groups, which must divide D = {dim}.")
        groups.append(g)
    if groups[0] != groups[1]:
        raise UserError(f"selective_scan: B and C must have as many groups, got {groups[0]} and {groups[1]}.")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (dim,):
            raise UserError(f"selective_scan: {name} must have shape (D,) = ({dim},), got {tuple(t.shape)}.")
    if z is not None and z.shape != u.shape:
        raise UserError(f"selective_scan: z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}.")
    if initial_state is not None and initial_state.shape != (batch, dim, n_state):
        raise UserError(
            f"selective_scan: initial_state must have shape (batch, D, N) = ({batch}, {dim}, {n_state}), "
            f"got {tuple(initial_state.shape)}."
        )


def _resolve_backend(backend: str, u: torch.Tensor) -> str:
    if backend not in BACKENDS:
        raise UserError(f"selective_scan: backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "auto":
        return "numba" if fused is not None and u.device.type == "cpu" and not exporting() else "torch"
    if backend == "numba" and fused is None:
        raise UserError("selective_scan: backend='numba' needs numba (pip install numba); or use backend='torch'.")
    if backend == "numba" and u.device.type != "cpu":
        raise UserError(f"selective_scan: backend='numba' runs on CPU tensors, got {u.device}; use backend='torch'.")
    return backend


def _dense_float32(t: torch.Tensor) -> torch.Tensor:
    """t as a contiguous float32 tensor, copied at most once (differentiable)."""
    if t.dtype == torch.float32:
        return t.contiguous()
    return torch.empty(t.shape, dtype=torch.float32, device=t.device).copy_(t)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """(batch, D, L) -> contiguous float32 (batch, L, D); free when t is the transpose of a (batch, L, D) tensor."""
    return _dense_float32(t.transpose(1, 2))


def _time_major(t: torch.Tensor) -> torch.Tensor:
    """(batch, N, L) or (batch, G, N, L) -> contiguous float32 (batch, G, L, N)."""
    return _dense_float32((t if t.dim() == 4 else t[:, None]).transpose(-1, -2))


def selective_scan(
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
    backend: str = "auto",
    *,
    initial_state: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan with ``mamba_ssm``'s ``selective_scan_fn`` contract, differentiable in every input.

    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t,  y_t = C_t h_t + D u_t,  out = y * silu(z), with
    Δ = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias, and h_0 = ``initial_state``
    (zeros if None).
    u, delta, z: (batch, D, L); A: (D, N) real; B, C: (batch, N, L) or (batch, G, N, L), channel d reading group
    d // (D // G); D, delta_bias: (D,); initial_state: (batch, D, N). Returns out (batch, D, L) in u's dtype, or
    (out, last_state (batch, D, N)), last_state in float32 (float64 for float64 inputs on the "torch" and "ref"
    backends).

    Carried state: a sequence cut into chunks [x1, x2] scans as x1 with ``return_last_state=True``, then x2 with
    ``initial_state=`` x1's last state; the outputs are those of one scan over the whole sequence, and gradients flow
    through the state into the first chunk (detach it between chunks for truncated backpropagation through time).
    Any strides and dtypes; inside, the "numba" backend computes in float32 and is fastest when u, delta and z are
    transposes of contiguous (batch, L, D) tensors (no copies), its out being such a transpose too.
    ``backend``: "auto" | "numba" | "torch" | "unrolled" | "ref", see the module docstring.

    Example:
        >>> u, delta = torch.randn(2, 8, 100), torch.rand(2, 8, 100)
        >>> A, B, C = -torch.rand(8, 16), torch.randn(2, 16, 100), torch.randn(2, 16, 100)
        >>> selective_scan(u, delta, A, B, C, delta_softplus=True).shape
        torch.Size([2, 8, 100])
        >>> out1, h = selective_scan(u[..., :60], delta[..., :60], A, B[..., :60], C[..., :60], return_last_state=True)
        >>> out2 = selective_scan(u[..., 60:], delta[..., 60:], A, B[..., 60:], C[..., 60:], initial_state=h)
        >>> torch.allclose(torch.cat([out1, out2], -1), selective_scan(u, delta, A, B, C), atol=1e-5)
        True
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    backend = _resolve_backend(backend, u)
    if backend != "numba":
        if backend == "unrolled":
            recurrence = partial(unrolled, rounds=rounds_for(u.shape[-1]))
        else:
            recurrence = sequential if backend == "ref" else chunked
        args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state)
        return run_recurrence(recurrence, *args)

    out, last_state, _ = fused.selective_scan_fwd(
        _channels_last(u),
        _channels_last(delta),
        _dense_float32(A.t()),
        _time_major(B),
        _time_major(C),
        _dense_float32(D) if D is not None else None,
        _channels_last(z) if z is not None else None,
        _dense_float32(initial_state) if initial_state is not None else None,
        _dense_float32(delta_bias) if delta_bias is not None else None,
        delta_softplus,
    )
    out = out.transpose(1, 2).to(u.dtype)
    return (out, last_state) if return_last_state else out


def scan_flops(batch: int, dim: int, seq_len: int, d_state: int, *, with_D: bool = True, with_z: bool = False) -> int:
    """FLOPs of one selective scan: 9·batch·L·D·N, plus batch·D·L for the D skip and batch·D·L for the z gate.

    This is the count the visual-Mamba papers report (VMamba's ``flops_selective_scan_fn``), following Albert Gu
    in state-spaces/mamba#110. Per (batch, step, channel, state): 3 to discretise (Δ·A, Δ·B, ·u), 4 for the
    recurrence h = a·h + b counted as a parallel scan does it (2 multiply-adds), 2 for the readout C·h
    (multiply-add). Not counted: exp, softplus, delta_bias, silu, casts. FLOP counters cannot see inside the fused
    kernel (``FlopCounterMode`` counts 0 for it), so add this to their total.

    Example:
        >>> scan_flops(1, 384, 196, 16)  # one scan of a 14 x 14 token grid at D = 384
        10913280
    """
    flops = 9 * batch * seq_len * dim * d_state
    if with_D:
        flops += batch * dim * seq_len
    if with_z:
        flops += batch * dim * seq_len
    return flops
