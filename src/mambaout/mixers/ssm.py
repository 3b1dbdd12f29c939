"""Mamba's token mixer in the Gated CNN block's slot: depthwise conv -> SiLU -> selective scan(s).

    c -> LocalConv -> SiLU -> sum over scan directions of SelectiveSSM(tokens in that order) -> c'

This is the paper's Figure 2: a Mamba block is a Gated CNN block whose token mixer also runs an SSM, so swapping
"conv" for "ssm" in the same network adds the SSM and changes nothing else. The SSM (`mambaout.ssm.SelectiveSSM`)
has input-dependent Δ, B, C, S4D-real `A_log`, a `D` skip, d_state 16; its parameters stay fp32 and out of weight
decay. Images are sequences only once an order is chosen (`scan=`):

- "cross" (images, default): VMamba's SS2D, four directions (row-major, column-major, and both reversed), one SSM
  each, outputs summed;
- "bidi": Vim's raster scan forward and backward (two SSMs, summed); on sequences: forward and backward;
- "causal" (sequences, default): one forward scan; on images one raster scan. Its conv is causal too (left padding
  on sequences, the raster mask on images), so the mixer is causal: output t never depends on tokens after t.

Streaming (layout "1d", scan "causal"): the state is {"conv": the conv's last k - 1 inputs (batch, C, k - 1),
"ssm": the scan's h (batch, C, N) float32}. `forward(x, state)` runs a chunk of a stream from it and returns
(y, the next state), differentiable through the state (detach it between chunks for truncated backpropagation
through time); `step(x_t, state)` one token. Chunks, steps and one pass over the whole sequence agree.

Cost (MACs, per forward): the projections inside the SSM are linear layers the counter sees; the scan itself
(a fused kernel) is invisible and adds `scan_flops(batch, C, L, d_state) / 2` per direction: mamba_ssm's
9·B·L·C·N FLOPs (exp(ΔA), ΔB·u, the state update and C·h), halved because count_macs counts MACs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mambaout.errors import UserError
from mambaout.mixers.local_conv import LocalConv, check_layout
from mambaout.ssm import SelectiveSSM, scan_flops

# name -> (to sequence, back to the input's shape); x is (B, H, W, C) or (B, L, C).
Order = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor, torch.Size], torch.Tensor]]


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1, x.shape[-1])


def _cols(x: torch.Tensor) -> torch.Tensor:
    return _rows(x.transpose(1, 2))


def _unrows(y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return y.reshape(shape)


def _uncols(y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    b, h, w, c = shape
    return y.reshape(b, w, h, c).transpose(1, 2)


ORDERS: dict[str, Order] = {
    "row": (_rows, _unrows),
    "row_rev": (lambda x: _rows(x).flip(1), lambda y, s: _unrows(y.flip(1), s)),
    "col": (_cols, _uncols),
    "col_rev": (lambda x: _cols(x).flip(1), lambda y, s: _uncols(y.flip(1), s)),
}
SCANS = {
    "2d": {"cross": ("row", "col", "row_rev", "col_rev"), "bidi": ("row", "row_rev"), "causal": ("row",)},
    "1d": {"bidi": ("row", "row_rev"), "causal": ("row",)},
}
DEFAULT_SCAN = {"2d": "cross", "1d": "causal"}


def scan_directions(layout: str, scan: str | None = None) -> tuple[str, ...]:
    """The token orders a scan mode runs: ("row", "col", "row_rev", "col_rev") for images' "cross", etc."""
    scans = SCANS[check_layout(layout)]
    scan = scan or DEFAULT_SCAN[layout]
    if scan not in scans:
        raise UserError(f"scan={scan!r} is not available for layout {layout!r}; choose one of {sorted(scans)}")
    return scans[scan]


class SSMMixer(nn.Module):
    """Conv -> SiLU -> selective scan along one or more token orders, summed. Channels-last in and out.

    Example:
        >>> SSMMixer(48, layout="2d", scan="cross")(torch.randn(2, 14, 14, 48)).shape
        torch.Size([2, 14, 14, 48])
        >>> mixer = SSMMixer(48, kernel_size=4, layout="1d")  # causal: streams
        >>> y, state = mixer(torch.randn(2, 100, 48), mixer.init_state(2))
        >>> y, state = mixer(torch.randn(2, 50, 48), state)  # continues the same sequence
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        layout: str = "2d",
        scan: str | None = None,
        d_state: int = 16,
        **ssm_kwargs,
    ):
        super().__init__()
        self.layout = check_layout(layout)
        self.scan = scan or DEFAULT_SCAN[layout]
        self.directions = scan_directions(layout, self.scan)
        self.causal = self.scan == "causal"
        self.d_state = d_state
        self.ssm_kwargs = dict(ssm_kwargs)
        self.conv = LocalConv(dim, kernel_size, layout, causal=self.causal)
        self.act = nn.SiLU()
        self.ssms = nn.ModuleList(SelectiveSSM(dim, d_state=d_state, **ssm_kwargs) for _ in self.directions)

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (B, H, W, C) or (B, L, C) -> the same shape; with `state` (streaming mixers): -> (y, the next state)."""
        if state is not None:
            self._check_streams()
            c, conv_state = self.conv(x, state["conv"])
            y, h = self.ssms[0](self.act(c), return_last_state=True, initial_state=state["ssm"])
            return y, {"conv": conv_state, "ssm": h}
        x = self.act(self.conv(x))
        y = None
        for name, ssm in zip(self.directions, self.ssms):
            to_seq, from_seq = ORDERS[name]
            out = from_seq(ssm(to_seq(x)), x.shape)
            y = out if y is None else y + out
        return y

    @torch.no_grad()
    def init_weights(self) -> None:
        """Mamba's initialisation of the mixer's insides, which a network-wide init of every conv and Linear overwrites.

        PyTorch's default init for the conv and x_proj (as mamba_ssm leaves them), and each SSM's Δ projection
        (uniform weight, inverse-softplus bias: Δ log-uniform in [dt_min, dt_max], by default [1e-3, 1e-1]). Networks
        call this after their own
        init (MambaOut's truncated normal 0.02 shrinks conv -> SiLU -> x_proj so much that B, C and Δ barely depend
        on the input, and selective copying does not start to learn within 1000 steps).
        """
        self.conv.conv.reset_parameters()
        for ssm in self.ssms:
            ssm.x_proj.reset_parameters()
            fresh = SelectiveSSM(ssm.dim, d_state=ssm.d_state, **{**self.ssm_kwargs, "dt_rank": ssm.dt_rank})
            ssm.dt_proj.load_state_dict(fresh.dt_proj.state_dict())

    def extra_macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        batch, dim = output.shape[0], output.shape[-1]
        seq_len = output[0, ..., 0].numel()
        return len(self.ssms) * scan_flops(batch, dim, seq_len, self.d_state) // 2

    def extra_repr(self) -> str:
        return f"scan={self.scan!r}, directions={self.directions}"

    # -- streaming (layout "1d", scan "causal"): a chunk or one token at a time, constant memory --------------------
    def _check_streams(self) -> None:
        if self.layout != "1d" or not self.causal:
            raise ValueError("only the causal 1-D SSM mixer streams (layout='1d', scan='causal')")

    def init_state(
        self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> dict[str, torch.Tensor]:
        """The conv's last k - 1 inputs and the SSM state h (batch, C, N), float32 as the scan keeps it; zeros."""
        self._check_streams()
        ssm = self.ssms[0]
        device = device or ssm.A_log.device
        h = torch.zeros(batch, ssm.dim, ssm.d_state, device=device, dtype=torch.float32)
        return {"conv": self.conv.init_state(batch, device, dtype), "ssm": h}

    def step(self, x: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One token x (batch, C) -> (y (batch, C), new state), through `SelectiveSSM.step` (the scan's recurrence)."""
        c, conv_state = self.conv.step(x, state["conv"])
        h = state["ssm"].clone()  # SelectiveSSM.step updates in place; the caller's state stays as it was
        y = self.ssms[0].step(self.act(c), h)
        return y, {"conv": conv_state, "ssm": h}
