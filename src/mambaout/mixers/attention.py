"""Multi-head self-attention in the token-mixer slot of the Gated CNN block, fully visible or causal.

    x -> depthwise conv -> SiLU -> qkv -> softmax(q k^T / sqrt(d)) v  (over all H*W or L tokens) -> proj

It has the same shape as the SSM mixer (conv -> SiLU -> global operator), so "attn" and "ssm" differ only in the
global operator and both contain MambaOut's local conv. By default that conv is the only positional information:
there is no positional embedding, and the conv's zero padding tells tokens where the borders are (as in
CPVT/ConvNeXt-style hybrids), so beyond the conv's reach attention cannot tell how long ago it saw a token. In
"attn_causal" the conv is causal too (raster order on images), so the whole mixer is causal: output token t never
depends on tokens after t. Heads have 32 channels where C allows (C // 32 heads, at least 1, lowered until they
divide C).

Options for sequences (layout "1d"):
- `rope=True`: rotary position embedding (RoFormer's, channel i paired with i + d/2 as in GPT-NeoX; timm's
  `freq_bands` and `apply_rot_embed`): q and k of the token at absolute position p are rotated by p·θ_i,
  θ_i = rope_base^(-2i/d) per pair of channels, so q·k depends on the relative position only. Angles are computed
  in float64 (a float32 p·θ is off by up to 0.03 rad a million tokens into a stream) and applied in the input's
  dtype.
- `window=W` (causal): token t attends to tokens t - W + 1 .. t only (a banded causal mask).

Streaming (causal "1d"): the state is {"conv": the conv's last k - 1 inputs, "kv": the keys (already rotated by
their own absolute position) and values, (2, batch, heads, capacity, head_dim), "length": tokens seen, "window"}.
Without a window, slot p holds token p and the capacity grows as the stream does; with a window W the cache is a
ring of W slots, token p in slot p mod W. `forward(x, state)` runs a chunk of a stream (its tokens attend to the
cache and to the chunk's earlier tokens) and returns (y, the next state); `step(x_t, state)` runs one token and
writes the cache in place. Chunks, steps and one pass over the whole sequence give the same outputs, with RoPE too.

Cost (MACs, per forward): q k^T and the weighted sum of v are 2·B·C·L² fully visible, half that causal
(B·C·L²): the 4·D·L² FLOPs of the paper with D = C. FlopCounterMode does not see the CPU kernel of
`F.scaled_dot_product_attention` and counts the CUDA kernels as fully visible (2·B·C·L²), so `extra_macs` adds the
formula minus what the counter saw on that device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers.pos_embed_sincos import apply_rot_embed, freq_bands
from torch import nn

from mambaout.errors import UserError
from mambaout.mixers.local_conv import LocalConv


def num_heads_for(dim: int, head_dim: int = 32) -> int:
    """C // head_dim heads (at least one), lowered until they divide C: 192 -> 6, 48 -> 1, 96 -> 3, 16 -> 1."""
    heads = max(1, dim // head_dim)
    while dim % heads:
        heads -= 1
    return heads


def attention_macs(batch: int, seq_len: int, dim: int, causal: bool) -> int:
    """MACs of q k^T plus attn @ v: 2·B·C·L², half for a causal mask."""
    full = 2 * batch * dim * seq_len * seq_len
    return full // 2 if causal else full


def _counter_sees_sdpa(device: torch.device) -> bool:
    # torch.utils.flop_counter registers the CUDA flash / memory-efficient / cuDNN kernels of SDPA (as if fully
    # visible), not the CPU one (`_scaled_dot_product_flash_attention_for_cpu`, torch 2.14): checked by the tests.
    return device.type == "cuda"


class AttentionMixer(nn.Module):
    """Self-attention over all tokens of a (B, H, W, C) map ("2d", raster order) or a (B, L, C) sequence ("1d").

    Example:
        >>> AttentionMixer(64, layout="1d", causal=True)(torch.randn(2, 50, 64)).shape
        torch.Size([2, 50, 64])
        >>> mixer = AttentionMixer(64, kernel_size=4, layout="1d", causal=True, rope=True, window=32)
        >>> y, state = mixer(torch.randn(2, 50, 64), mixer.init_state(2))  # a stream, chunk by chunk
        >>> y, state = mixer(torch.randn(2, 20, 64), state)  # tokens 50..69, attending to the last 32
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        layout: str = "2d",
        causal: bool = False,
        head_dim: int = 32,
        window: int | None = None,
        rope: bool = False,
        rope_base: float = 10000.0,
    ):
        super().__init__()
        if window is not None and (window < 1 or not causal):
            raise UserError(f"attention's window must be a positive number of tokens, causal only; got {window}")
        if rope and layout != "1d":
            raise UserError("rope=True gives sequence positions: use it with layout='1d'")
        self.causal = causal
        self.num_heads = num_heads_for(dim, head_dim)
        self.window = window
        self.rope = rope
        self.conv = LocalConv(dim, kernel_size, layout, causal=causal)
        self.act = nn.SiLU()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        if rope:
            size = dim // self.num_heads
            if size % 2:
                raise UserError(f"rope=True rotates pairs of channels: the head size must be even, not {size}")
            bands = freq_bands(size, temperature=rope_base).double()  # θ_i, (head_dim / 2,)
            self.register_buffer("rope_bands", bands, persistent=False)

    def project(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Activated conv output x (B, L, C) at absolute `positions` (L,) int64 -> q, k, v (B, heads, L, head_dim),
        q and k rotated by their positions if `rope`."""
        batch, seq_len, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, seq_len, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.rope:
            angles = positions.double()[:, None] * self.rope_bands  # (L, head_dim / 2), float64: see the docstring
            # channel i pairs with channel i + head_dim / 2 (GPT-NeoX's "rotate half"): sin, cos of angle i repeated
            # as [0..d/2, 0..d/2] (repeat_interleave's pairs came out wrong from torch's ONNX export at traced shapes)
            sin, cos = (f(angles).repeat(1, 2).to(x.dtype) for f in (torch.sin, torch.cos))
            q, k = apply_rot_embed(q, sin, cos, half=True), apply_rot_embed(k, sin, cos, half=True)
        return q, k, v

    @staticmethod
    def causal_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None = None) -> torch.Tensor:
        """(queries, keys), True where a query at q_pos may attend to a key at k_pos: k <= q, and q - k < window."""
        allowed = k_pos[None, :] <= q_pos[:, None]
        if window is not None:
            allowed = allowed & (k_pos[None, :] > q_pos[:, None] - window)
        return allowed

    def forward(self, x: torch.Tensor, state: dict | None = None) -> torch.Tensor | tuple[torch.Tensor, dict]:
        """x (B, H, W, C) or (B, L, C) -> the same shape; with `state` (causal "1d"): -> (y, the next state)."""
        if state is not None:
            return self._forward_chunk(x, state)
        shape = x.shape
        x = self.act(self.conv(x)).reshape(shape[0], -1, shape[-1])  # (B, L, C), raster order for images
        batch, seq_len, dim = x.shape
        positions = torch.arange(seq_len, device=x.device)
        q, k, v = self.project(x, positions)
        if self.window is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.causal_mask(positions, positions, self.window))
        return self.proj(y.transpose(1, 2).reshape(batch, seq_len, dim)).reshape(shape)

    @torch.no_grad()
    def init_weights(self) -> None:
        """PyTorch's default init for the conv and projections, after a network-wide init overwrote them.

        Like the SSM mixer (see `SSMMixer.init_weights`): with MambaOut's truncated normal 0.02 on conv and qkv the
        attention stays uniform for hundreds of steps; measured on selective copying.
        """
        for m in (self.conv.conv, self.qkv, self.proj):
            m.reset_parameters()

    def extra_macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        batch, dim = output.shape[0], output.shape[-1]
        seq_len = output[0, ..., 0].numel()
        seen = attention_macs(batch, seq_len, dim, causal=False) if _counter_sees_sdpa(output.device) else 0
        return attention_macs(batch, seq_len, dim, self.causal) - seen

    def extra_repr(self) -> str:
        extra = f", window={self.window}" if self.window is not None else ""
        return f"num_heads={self.num_heads}, causal={self.causal}, rope={self.rope}{extra}"

    # -- streaming (layout "1d", causal): a chunk or one token at a time with a key/value cache ---------------------
    def init_state(
        self,
        batch: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        window: int | None = None,
    ) -> dict[str, torch.Tensor | int | None]:
        """The conv's last k - 1 inputs and an empty key/value cache (2, batch, heads, capacity, head_dim).

        Without a window the cache keeps every past token (its capacity grows with the stream, doubling in `step`);
        with a window W (the mixer's, or `window` here) it is a ring of the last W tokens.
        """
        if not self.causal or self.conv.layout != "1d":
            raise ValueError("only causal 1-D attention streams (layout='1d', causal=True)")
        w = self.qkv.weight
        device, dtype = device or w.device, dtype or w.dtype
        dim = w.shape[1]
        window = window or self.window
        capacity = window or 16
        kv = torch.zeros(2, batch, self.num_heads, capacity, dim // self.num_heads, device=device, dtype=dtype)
        return {"conv": self.conv.init_state(batch, device, dtype), "kv": kv, "length": 0, "window": window}

    def _forward_chunk(self, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """x (batch, L, C), the next L tokens of the stream that left `state` -> (y (batch, L, C), the next state).

        The chunk's queries attend to the cached keys and to the chunk's own keys up to themselves (within the
        window); the returned cache is new tensors (the given one is left as it is), differentiable."""
        c, conv_state = self.conv(x, state["conv"])
        batch, seq_len, dim = c.shape
        kv, length, window = state["kv"], state["length"], state["window"]
        positions = torch.arange(length, length + seq_len, device=x.device)
        q, k, v = self.project(self.act(c), positions)
        cached = min(length, window) if window else length
        past = torch.arange(length - cached, length, device=x.device)  # positions of the cached tokens, in order
        kv = kv.index_select(3, past % window if window else past)  # (2, batch, heads, cached, d), oldest first
        keys, values = torch.cat((kv[0], k), dim=2), torch.cat((kv[1], v), dim=2)
        k_pos = torch.cat((past, positions))
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=self.causal_mask(positions, k_pos, window))
        kv = torch.stack((keys, values))
        if window:  # keep the last W tokens, token p in slot p mod W
            keep = min(window, k_pos.shape[0])
            ring = kv.new_zeros(*kv.shape[:3], window, kv.shape[-1])
            kv = ring.index_copy(3, k_pos[-keep:] % window, kv[:, :, :, -keep:])
        state = {"conv": conv_state, "kv": kv, "length": length + seq_len, "window": window}
        return self.proj(y.transpose(1, 2).reshape(batch, seq_len, dim)), state

    def step(self, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """One token x (batch, C) -> (y (batch, C), new state): attention of the token over the cached ones and itself.

        The cache is written in place (copying it every token would make a step cost grow with the stream)."""
        c, conv_state = self.conv.step(x, state["conv"])
        batch, dim = c.shape
        kv, length, window = state["kv"], state["length"], state["window"]
        q, k, v = self.project(self.act(c)[:, None], torch.tensor([length], device=c.device))  # (batch, heads, 1, d)
        if window is None and length == kv.shape[3]:  # full: double the capacity (amortised O(1) per token)
            kv = torch.cat((kv, torch.zeros_like(kv)), dim=3)
        slot = length % window if window else length
        kv[0, :, :, slot], kv[1, :, :, slot] = k[:, :, 0], v[:, :, 0]
        seen = min(length + 1, kv.shape[3])
        y = F.scaled_dot_product_attention(q, kv[0, :, :, :seen], kv[1, :, :, :seen])  # (batch, heads, 1, d)
        state = {"conv": conv_state, "kv": kv, "length": length + 1, "window": window}
        return self.proj(y.reshape(batch, dim)), state
