"""Multi-head self-attention in the token-mixer slot of the Gated CNN block, fully visible or causal.

    x -> depthwise conv -> SiLU -> qkv -> softmax(q k^T / sqrt(d)) v  (over all H*W or L tokens) -> proj

It has the same shape as the SSM mixer (conv -> SiLU -> global operator), so "attn" and "ssm" differ only in the
global operator and both contain MambaOut's local conv. That conv is also the positional information: there is no
positional embedding, and the conv's zero padding tells tokens where the borders are (as in CPVT/ConvNeXt-style
hybrids). In "attn_causal" the conv is causal too (raster order on images), so the whole mixer is causal: output
token t never depends on tokens after t. Heads have 32 channels where C allows (C // 32 heads, at least 1, lowered
until they divide C).

Cost (MACs, per forward): q k^T and the weighted sum of v are 2·B·C·L² fully visible, half that causal
(B·C·L²): the 4·D·L² FLOPs of the paper with D = C. FlopCounterMode does not see the CPU kernel of
`F.scaled_dot_product_attention` and counts the CUDA kernels as fully visible (2·B·C·L²), so `extra_macs` adds the
formula minus what the counter saw on that device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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
    """

    def __init__(self, dim: int, kernel_size: int = 7, layout: str = "2d", causal: bool = False, head_dim: int = 32):
        super().__init__()
        self.causal = causal
        self.num_heads = num_heads_for(dim, head_dim)
        self.conv = LocalConv(dim, kernel_size, layout, causal=causal)
        self.act = nn.SiLU()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = self.act(self.conv(x)).reshape(shape[0], -1, shape[-1])  # (B, L, C), raster order for images
        batch, seq_len, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, seq_len, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
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
        return f"num_heads={self.num_heads}, causal={self.causal}"

    # -- streaming (layout "1d", causal): one token at a time with a key/value cache -------------------------------
    def init_state(
        self,
        batch: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        window: int | None = None,
    ) -> dict[str, torch.Tensor | int | None]:
        """The conv's last k - 1 inputs and an empty key/value cache (batch, heads, capacity, head_dim).

        Without `window` the cache keeps every past token (its capacity doubles as it fills: memory grows with the
        stream); with `window` W it is a ring of the last W tokens (what a causal mask banded to W sees).
        """
        if not self.causal or self.conv.layout != "1d":
            raise ValueError("only causal 1-D attention streams token by token")
        w = self.qkv.weight
        device, dtype = device or w.device, dtype or w.dtype
        dim = w.shape[1]
        capacity = window or 16
        kv = torch.zeros(2, batch, self.num_heads, capacity, dim // self.num_heads, device=device, dtype=dtype)
        return {"conv": self.conv.init_state(batch, device, dtype), "kv": kv, "length": 0, "window": window}

    def step(self, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """One token x (batch, C) -> (y (batch, C), new state): attention of the token over the cached ones and itself.

        The cache is written in place (copying it every token would make a step cost grow with the stream)."""
        c, conv_state = self.conv.step(x, state["conv"])
        batch, dim = c.shape
        q, k, v = self.qkv(self.act(c)).reshape(batch, 3, self.num_heads, 1, dim // self.num_heads).unbind(1)
        kv, length, window = state["kv"], state["length"], state["window"]
        if window is None and length == kv.shape[3]:  # full: double the capacity (amortised O(1) per token)
            kv = torch.cat((kv, torch.zeros_like(kv)), dim=3)
        slot = length % window if window else length
        kv[0, :, :, slot], kv[1, :, :, slot] = k[:, :, 0], v[:, :, 0]
        seen = min(length + 1, kv.shape[3])
        y = F.scaled_dot_product_attention(q, kv[0, :, :, :seen], kv[1, :, :, :seen])  # (batch, heads, 1, d)
        state = {"conv": conv_state, "kv": kv, "length": length + 1, "window": window}
        return self.proj(y.reshape(batch, dim)), state
