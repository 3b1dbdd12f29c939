"""Mamba's selective SSM and the Mamba block, with ``mamba_ssm.modules.mamba_simple.Mamba``'s parameter names.

Data flow of the block (PAPER.md: Mamba = Gated CNN + SSM in the token mixer):
x, z = in_proj(input); x = silu(causal depthwise conv1d(x)); y = SSM(x) * silu(z); output = out_proj(y).
SSM(x) is written once, as two functions over four parameters (x_proj, dt_proj, A_log, D): ``selective_ssm`` for a
sequence, ``selective_ssm_step`` for one token. ``SelectiveSSM`` owns those four parameters and nothing else;
``Mamba`` owns them too, declared where mamba_ssm declares them, so its state_dict has mamba_ssm's keys in
mamba_ssm's order. Both call the same functions.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mambaout.errors import UserError
from mambaout.ssm.pointwise import skip_and_gate, step_size
from mambaout.ssm.scan import selective_scan


def ssm_projections(
    dim: int,
    d_state: int,
    dt_rank: int,
    dt_min: float = 0.001,
    dt_max: float = 0.1,
    dt_init: str = "random",
    dt_scale: float = 1.0,
    dt_init_floor: float = 1e-4,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[nn.Linear, nn.Linear]:
    """x_proj (dim -> dt_rank + 2 d_state, no bias: Δ's low-rank input, B, C) and dt_proj (dt_rank -> dim), with
    Mamba's Δ init: dt_proj.weight keeps the variance of Δ, softplus(dt_proj.bias) is log-uniform in [dt_min, dt_max].

    Example:
        >>> x_proj, dt_proj = ssm_projections(64, d_state=16, dt_rank=4)
        >>> x_proj.out_features, dt_proj.in_features
        (36, 4)
    """
    if dt_init not in ("random", "constant"):
        raise UserError(f"SelectiveSSM: dt_init must be 'random' or 'constant', got {dt_init!r}.")
    x_proj = nn.Linear(dim, dt_rank + 2 * d_state, bias=False, device=device, dtype=dtype)
    dt_proj = nn.Linear(dt_rank, dim, bias=True, device=device, dtype=dtype)
    dt_init_std = dt_rank**-0.5 * dt_scale
    if dt_init == "constant":
        nn.init.constant_(dt_proj.weight, dt_init_std)
    else:
        nn.init.uniform_(dt_proj.weight, -dt_init_std, dt_init_std)
    log_dt = torch.rand(dim, device=device) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    dt = torch.exp(log_dt).clamp(min=dt_init_floor)
    with torch.no_grad():
        dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
    dt_proj.bias._no_reinit = True
    return x_proj, dt_proj


def ssm_state_parameters(
    dim: int, d_state: int, device: torch.device | None = None
) -> tuple[nn.Parameter, nn.Parameter]:
    """A_log (dim, d_state) with the S4D-real init A = -exp(A_log) = -[1..N] per channel, and the skip D (dim,) = 1.

    Both float32 whatever the module's dtype (exp(Δ A) over long sequences needs the precision), both out of weight
    decay (``_no_weight_decay``), as in mamba_ssm.
    """
    A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(dim, 1)))
    D = nn.Parameter(torch.ones(dim, device=device))
    A_log._no_weight_decay = D._no_weight_decay = True
    return A_log, D


def delta_B_C(
    x: torch.Tensor, x_proj: nn.Linear, dt_proj: nn.Linear
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (..., C) -> Δ before bias and softplus (..., C), B (..., N), C (..., N)."""
    dt_rank = dt_proj.in_features
    d_state = (x_proj.out_features - dt_rank) // 2
    dt, B, C = torch.split(x_proj(x), [dt_rank, d_state, d_state], dim=-1)
    return F.linear(dt, dt_proj.weight), B, C


def selective_ssm(
    x: torch.Tensor,
    x_proj: nn.Linear,
    dt_proj: nn.Linear,
    A_log: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor | None = None,
    return_last_state: bool = False,
    backend: str = "auto",
    initial_state: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """x, z: (batch, L, C) -> y (batch, L, C) [, last_state (batch, C, N) float32]: Δ, B, C projected from x, then
    one forward selective scan with A = -exp(A_log), the D skip and, if ``z`` is given, the silu(z) gate, from
    ``initial_state`` (batch, C, N) (zeros if None; a previous chunk's last state continues its sequence).

    Example:
        >>> x_proj, dt_proj = ssm_projections(8, d_state=4, dt_rank=1); A_log, D = ssm_state_parameters(8, 4)
        >>> selective_ssm(torch.randn(2, 10, 8), x_proj, dt_proj, A_log, D).shape
        torch.Size([2, 10, 8])
    """
    dt, B, C = delta_B_C(x, x_proj, dt_proj)
    out = selective_scan(
        x.transpose(1, 2),
        dt.transpose(1, 2),
        -torch.exp(A_log.float()),
        B.transpose(1, 2),
        C.transpose(1, 2),
        D.float(),
        z=z.transpose(1, 2) if z is not None else None,
        delta_bias=dt_proj.bias.float(),
        delta_softplus=True,
        return_last_state=return_last_state,
        backend=backend,
        initial_state=initial_state,
    )
    if return_last_state:
        return out[0].transpose(1, 2), out[1]
    return out.transpose(1, 2)


def selective_ssm_step(
    x: torch.Tensor,
    ssm_state: torch.Tensor,
    x_proj: nn.Linear,
    dt_proj: nn.Linear,
    A_log: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token of ``selective_ssm``: x, z (batch, C) -> y (batch, C); ssm_state (batch, C, N) is updated in place.

    Constant memory per token; stepping through a sequence gives ``selective_ssm``'s output.
    """
    dt, B, C = delta_B_C(x, x_proj, dt_proj)
    # a token is a sequence of length 1: (batch, C) -> (batch, C, 1) for the pointwise parts
    dt = step_size(dt[..., None], dt_proj.bias, delta_softplus=True)  # (batch, C, 1)
    decay = torch.exp(dt * -torch.exp(A_log.float()))  # (batch, C, N)
    ssm_state.copy_(ssm_state * decay + dt * x.float()[..., None] * B.float()[:, None, :])
    y = (ssm_state.float() * C.float()[:, None, :]).sum(-1, keepdim=True)
    y = skip_and_gate(y, x[..., None], D, z[..., None] if z is not None else None)
    return y[..., 0].to(x.dtype)


class SelectiveSSM(nn.Module):
    """(batch, L, C) -> (batch, L, C): a selective scan whose Δ, B and C depend on the input.

    Takes an already convolved and activated sequence, channels last. Δ = softplus(dt_proj(x_proj(x)[:dt_rank])),
    B and C are the next two d_state-wide slices of x_proj(x); A = -exp(A_log) (S4D-real init: A = -[1..N] per
    channel); D is the skip. No gate unless ``z`` is passed. Always scans forward in L: for a backward or 2-D scan
    order, permute the sequence before and after the call. ``backend`` is forwarded to ``selective_scan``.
    A sequence cut into chunks runs as one: pass each chunk's last state as the next chunk's ``initial_state``.

    Example:
        >>> ssm = SelectiveSSM(64)
        >>> ssm(torch.randn(2, 100, 64)).shape
        torch.Size([2, 100, 64])
        >>> y1, h = ssm(torch.randn(2, 60, 64), return_last_state=True)  # h: (2, 64, 16) float32
        >>> y2, h = ssm(torch.randn(2, 40, 64), return_last_state=True, initial_state=h)  # continues the sequence
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        backend: str = "auto",
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.d_state = d_state
        self.dt_rank = math.ceil(dim / 16) if dt_rank == "auto" else dt_rank
        self.backend = backend
        self.x_proj, self.dt_proj = ssm_projections(
            dim, d_state, self.dt_rank, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, device, dtype
        )
        self.A_log, self.D = ssm_state_parameters(dim, d_state, device)

    def forward(
        self,
        x: torch.Tensor,
        z: torch.Tensor | None = None,
        return_last_state: bool = False,
        initial_state: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x, z: (batch, L, C) -> y (batch, L, C) [, last_state (batch, C, N) float32]; y *= silu(z) if z is given;
        the scan starts from ``initial_state`` (batch, C, N), zeros if None."""
        return selective_ssm(
            x, self.x_proj, self.dt_proj, self.A_log, self.D, z, return_last_state, self.backend, initial_state
        )

    def step(self, x: torch.Tensor, ssm_state: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """One token: x, z (batch, C) -> y (batch, C); ssm_state (batch, C, N) is updated in place."""
        return selective_ssm_step(x, ssm_state, self.x_proj, self.dt_proj, self.A_log, self.D, z)


class Mamba(nn.Module):
    """The Mamba block: (batch, L, d_model) -> (batch, L, d_model), causal in L.

    Constructor arguments (in order), parameter names, shapes, inits and state_dict key order are those of
    ``mamba_ssm``'s ``Mamba``, so its state_dicts load unchanged. ``use_fast_path=True`` lets the scan run the fused
    numba kernel on CPU (backend "auto"); ``False`` runs the pure-torch chunked scan (backend "torch"). A ``backend``
    keyword, if given, overrides that choice (see ``selective_scan``). ``step`` / ``allocate_inference_cache``
    stream one token at a time in constant memory; ``forward(chunk, state=...)`` runs a chunk of a stream from the
    same state (conv_state, ssm_state) and returns the next one, so chunks, steps and one whole sequence agree.

    Example:
        >>> block = Mamba(d_model=32)
        >>> block(torch.randn(2, 50, 32)).shape
        torch.Size([2, 50, 32])
        >>> state = block.allocate_inference_cache(2)
        >>> y1, state = block(torch.randn(2, 30, 32), state=state)  # a long sequence, chunk by chunk
        >>> y2, state = block(torch.randn(2, 20, 32), state=state)
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_fast_path: bool = True,
        layer_idx: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        *,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.use_fast_path = use_fast_path
        self.layer_idx = layer_idx
        self.backend = backend or ("auto" if use_fast_path else "torch")

        # Declared in mamba_ssm's order, which is its state_dict's order (own parameters A_log, D first).
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory_kwargs)
        # padding d_conv - 1 on both sides, output cut to the first L steps: a causal depthwise conv
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=conv_bias,
            **factory_kwargs,
        )
        self.act = nn.SiLU()
        self.x_proj, self.dt_proj = ssm_projections(
            self.d_inner, d_state, self.dt_rank, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, device, dtype
        )
        self.A_log, self.D = ssm_state_parameters(self.d_inner, d_state, device)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory_kwargs)

    def forward(
        self, hidden_states: torch.Tensor, *, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(batch, L, d_model) -> (batch, L, d_model); with ``state``, a chunk of a stream:
        -> (output, (conv_state, ssm_state)).

        ``state`` = (conv_state (batch, d_inner, d_conv): the last d_conv inputs of the conv, oldest first;
        ssm_state (batch, d_inner, d_state): the scan's h), as ``allocate_inference_cache`` (zeros: the stream's
        start) and ``step`` keep it. The returned state is new tensors (the given ones are left as they are) and is
        differentiable: gradients flow back into the previous chunk unless the caller detaches it.
        """
        seqlen = hidden_states.shape[1]
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)  # (batch, L, d_inner) each
        if state is None:
            x = self.act(self.conv1d(x.transpose(1, 2))[..., :seqlen]).transpose(1, 2)
            y = selective_ssm(x, self.x_proj, self.dt_proj, self.A_log, self.D, z, backend=self.backend)
            return self.out_proj(y)
        conv_state, ssm_state = state
        # the conv's left padding is the previous chunk's inputs: the last d_conv of them become the next conv_state
        inputs = torch.cat((conv_state.to(x.dtype), x.transpose(1, 2)), dim=-1)  # (batch, d_inner, d_conv + L)
        x = F.conv1d(inputs[..., 1:], self.conv1d.weight, self.conv1d.bias, groups=self.d_inner)
        x = self.act(x).transpose(1, 2)
        y, ssm_state = selective_ssm(
            x, self.x_proj, self.dt_proj, self.A_log, self.D, z, True, self.backend, initial_state=ssm_state
        )
        return self.out_proj(y), (inputs[..., -self.d_conv :].to(conv_state.dtype), ssm_state)

    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int | None = None, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero (conv_state (batch, d_inner, d_conv), ssm_state (batch, d_inner, d_state)) for ``step``.

        Their size does not depend on the sequence length; ``max_seqlen`` is accepted for mamba_ssm compatibility.
        """
        device = self.out_proj.weight.device
        conv_state = torch.zeros(
            batch_size, self.d_inner, self.d_conv, device=device, dtype=dtype or self.conv1d.weight.dtype
        )
        ssm_state = torch.zeros(
            batch_size, self.d_inner, self.d_state, device=device, dtype=dtype or self.dt_proj.weight.dtype
        )
        return conv_state, ssm_state

    def step(
        self, hidden_states: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One token (batch, 1, d_model) -> (output (batch, 1, d_model), conv_state, ssm_state), states in place.

        Example:
            >>> block = Mamba(d_model=32); conv_state, ssm_state = block.allocate_inference_cache(2)
            >>> block.step(torch.randn(2, 1, 32), conv_state, ssm_state)[0].shape
            torch.Size([2, 1, 32])
        """
        if hidden_states.dim() != 3 or hidden_states.shape[1] != 1:
            raise UserError(f"Mamba.step takes one token, shape (batch, 1, d_model), got {tuple(hidden_states.shape)}.")
        x, z = self.in_proj(hidden_states[:, 0]).chunk(2, dim=-1)  # (batch, d_inner) each
        conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
        conv_state[:, :, -1] = x
        x = (conv_state * self.conv1d.weight[:, 0]).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = self.act(x).to(hidden_states.dtype)
        y = selective_ssm_step(x, ssm_state, self.x_proj, self.dt_proj, self.A_log, self.D, z)
        return self.out_proj(y)[:, None], conv_state, ssm_state
