"""Mamba's selective SSM and the Mamba block, with ``mamba_ssm.modules.mamba_simple.Mamba``'s parameter names.

Data flow of the block (PAPER.md: Mamba = Gated CNN + SSM in the token mixer):
x, z = in_proj(input); x = silu(causal depthwise conv1d(x)); y = SSM(x) * silu(z); output = out_proj(y).
``SelectiveSSM`` is the SSM(x) part alone; ``Mamba`` is built on it, so both share one implementation.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mambaout.errors import UserError
from mambaout.ssm.scan import selective_scan


class SelectiveSSM(nn.Module):
    """(batch, L, C) -> (batch, L, C): a selective scan whose Δ, B and C depend on the input.

    Takes an already convolved and activated sequence, channels last. Δ = softplus(dt_proj(x_proj(x)[:dt_rank])),
    B and C are the next two d_state-wide slices of x_proj(x); A = -exp(A_log) (S4D-real init: A = -[1..N] per
    channel); D is the skip. No gate unless ``z`` is passed. Always scans forward in L: for a backward or 2-D scan
    order, permute the sequence before and after the call. ``backend`` is forwarded to ``selective_scan``.

    Example:
        >>> ssm = SelectiveSSM(64)
        >>> ssm(torch.randn(2, 100, 64)).shape
        torch.Size([2, 100, 64])
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
        factory_kwargs = {"device": device, "dtype": dtype}
        if dt_init not in ("random", "constant"):
            raise UserError(f"SelectiveSSM: dt_init must be 'random' or 'constant', got {dt_init!r}.")
        self.dim = dim
        self.d_state = d_state
        self.dt_rank = math.ceil(dim / 16) if dt_rank == "auto" else dt_rank
        self.backend = backend

        self.x_proj = nn.Linear(dim, self.dt_rank + 2 * d_state, bias=False, **factory_kwargs)
        self.dt_proj = nn.Linear(self.dt_rank, dim, bias=True, **factory_kwargs)
        # dt_proj.weight keeps the variance of Δ at init; its bias makes softplus(bias) log-uniform in [dt_min, dt_max].
        dt_init_std = self.dt_rank**-0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        else:
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        dt = torch.exp(torch.rand(dim, device=device) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(
            min=dt_init_floor
        )
        inv_dt = dt + torch.log(-torch.expm1(-dt))  # softplus^-1(dt)
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_dt)
        self.dt_proj.bias._no_reinit = True

        # A_log and D stay float32 whatever ``dtype`` is: exp(Δ A) over long sequences needs the precision.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(dim, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(dim, device=device))
        self.D._no_weight_decay = True

    def _dt_B_C(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (..., C) -> Δ before bias and softplus (..., C), B (..., N), C (..., N)."""
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.linear(dt, self.dt_proj.weight), B, C

    def forward(
        self, x: torch.Tensor, z: torch.Tensor | None = None, return_last_state: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x, z: (batch, L, C) -> y (batch, L, C) [, last_state (batch, C, N) float32]; y *= silu(z) if z is given."""
        dt, B, C = self._dt_B_C(x)
        out = selective_scan(
            x.transpose(1, 2),
            dt.transpose(1, 2),
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2),
            C.transpose(1, 2),
            self.D.float(),
            z=z.transpose(1, 2) if z is not None else None,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            return_last_state=return_last_state,
            backend=self.backend,
        )
        if return_last_state:
            return out[0].transpose(1, 2), out[1]
        return out.transpose(1, 2)

    def step(self, x: torch.Tensor, ssm_state: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """One token: x, z (batch, C) -> y (batch, C); ssm_state (batch, C, N) is updated in place.

        Constant memory per token; stepping through a sequence gives ``forward``'s output.
        """
        dt, B, C = self._dt_B_C(x)
        dt = F.softplus(dt.float() + self.dt_proj.bias.float())  # (batch, C)
        A = -torch.exp(self.A_log.float())  # (C, N)
        decay = torch.exp(dt[..., None] * A)
        ssm_state.copy_(ssm_state * decay + (dt * x.float())[..., None] * B.float()[:, None, :])
        y = (ssm_state.float() * C.float()[:, None, :]).sum(-1) + self.D.float() * x.float()
        if z is not None:
            y = y * F.silu(z.float())
        return y.to(x.dtype)


class Mamba(SelectiveSSM):
    """The Mamba block: (batch, L, d_model) -> (batch, L, d_model), causal in L.

    Constructor arguments, parameter names, shapes and inits are those of ``mamba_ssm``'s ``Mamba``, so its
    state_dicts load unchanged. ``step`` / ``allocate_inference_cache`` stream one token at a time in constant
    memory. ``backend`` selects the scan backend (see ``selective_scan``).

    Example:
        >>> block = Mamba(d_model=32)
        >>> block(torch.randn(2, 50, 32)).shape
        torch.Size([2, 50, 32])
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
        layer_idx: int | None = None,
        backend: str = "auto",
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        d_inner = int(expand * d_model)
        super().__init__(
            d_inner,
            d_state=d_state,
            dt_rank=math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank,
            dt_min=dt_min,
            dt_max=dt_max,
            dt_init=dt_init,
            dt_scale=dt_scale,
            dt_init_floor=dt_init_floor,
            backend=backend,
            **factory_kwargs,
        )
        self.d_model = d_model
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = d_inner
        self.layer_idx = layer_idx

        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias, **factory_kwargs)
        # padding d_conv - 1 on both sides, output cut to the first L steps: a causal depthwise conv
        self.conv1d = nn.Conv1d(
            d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=conv_bias, **factory_kwargs
        )
        self.act = nn.SiLU()
        # Submodule order as in mamba_ssm (in_proj, conv1d, x_proj, dt_proj, out_proj), so state_dict keys line up.
        for name in ("x_proj", "dt_proj"):
            self._modules[name] = self._modules.pop(name)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias, **factory_kwargs)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(batch, L, d_model) -> (batch, L, d_model)."""
        seqlen = hidden_states.shape[1]
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)  # (batch, L, d_inner) each
        x = self.act(self.conv1d(x.transpose(1, 2))[..., :seqlen]).transpose(1, 2)
        return self.out_proj(super().forward(x, z))

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
        y = super().step(self.act(x).to(hidden_states.dtype), ssm_state, z)
        return self.out_proj(y)[:, None], conv_state, ssm_state
