"""The causal temporal model over frame embeddings, whole sequences offline or one frame at a time, and the k-NN
per-frame baseline.

    embeddings (B, T, D) -> Linear(D, width) -> depth x GatedCNNBlock(mixer, 1-D causal) -> LayerNorm
                         -> Linear(width, len(horizons) * K) -> log-softmax -> log p (B, T, len(horizons), K)

What it predicts is a distribution, not a point: output t, horizon h is the log-probability of each of the K frame
codes (`FrameEncoder.codes`: the nearest k-means centroid of the frame's thumbnail) for frame t + h, given frames
<= t. A frame's surprise at horizon h is the negative log-likelihood of its own code under the prediction made h
frames before (`surprise`); training minimises it on normal video (`code_loss`). Why: the items a wrong-order fault
swaps fall in different codes however little they move a squared error over all dimensions, so a model that knows
where the line is in its cycle pays no loss where a memoryless one must hedge; and a categorical keeps "a triangle
or a diamond" as two peaks, where a squared error predicts their average and is surprised by both (the ideal losses
and AUROCs of this target are in docs/anomaly.md). The first `burn_in` frames of a window carry no loss: their
context is still filling. The blocks are MambaOut's
`GatedCNNBlock` with a 1-D causal mixer, as the study's `SequenceModel`: "conv" (MambaOut's causal depthwise conv),
"ssm" (conv -> SiLU -> selective scan), "attn_causal" (conv -> SiLU -> causal attention, `window` W bounding what a
frame attends to: the last W frames). The models of one comparison have the same depth and kernel and parameter
counts within 10 % (`matched_widths` picks each mixer's width). `step` runs one frame with the state each mixer
keeps (the conv's last k - 1 inputs per block, the SSM's state, attention's key/value cache), and stepping through
a sequence gives `forward`'s output to float32 rounding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from mambaout.anomaly.config import TEMPORAL_MIXERS
from mambaout.errors import UserError
from mambaout.mixers import check_mixer
from mambaout.mixers.attention import AttentionMixer
from mambaout.models.mambaout import GatedCNNBlock
from mambaout.models.sequence import SequenceModel


class WindowedAttention(AttentionMixer):
    """Causal attention in which token t sees tokens t - W + 1 .. t only: the offline twin of a W-token cache (the
    exported step graph's ring, which rotates each key by its frame's position as it writes it, with `rope`)."""

    def __init__(self, dim: int, kernel_size: int, window: int, rope: bool = True):
        super().__init__(dim, kernel_size, layout="1d", causal=True, window=window, rope=rope)


def surprise(log_probs: torch.Tensor, codes: torch.Tensor, horizons: tuple[int, ...]) -> torch.Tensor:
    """Negative log-likelihood per frame and horizon (..., T, len(horizons)); NaN where t < h (no prediction yet).

    log_probs (..., T, len(horizons), K) with [t, i] the prediction made at t for frame t + horizons[i]; codes (..., T).
    """
    out = torch.full((*codes.shape, len(horizons)), math.nan, device=log_probs.device)
    for i, h in enumerate(horizons):
        if h < codes.shape[-1]:
            made = log_probs[..., :-h, i, :]
            out[..., h:, i] = -made.gather(-1, codes[..., h:, None].long())[..., 0]
    return out


def code_loss(log_probs: torch.Tensor, codes: torch.Tensor, horizons: tuple[int, ...], burn_in: int) -> torch.Tensor:
    """Mean over horizons of the mean NLL of frames t >= burn_in (earlier frames: the context is still filling)."""
    nll = surprise(log_probs, codes, horizons)[..., burn_in:, :]
    return torch.stack([nll[..., i][~torch.isnan(nll[..., i])].mean() for i in range(len(horizons))]).mean()


class TemporalModel(nn.Module):
    """Predicts the distribution of each frame's code `horizons` frames ahead from the frames so far.

    Example:
        >>> model = TemporalModel(embed_dim=32, codes=64, width=48, depth=2, mixer="ssm", horizons=(1, 16))
        >>> model(torch.randn(2, 100, 32)).shape
        torch.Size([2, 100, 2, 64])
    """

    def __init__(
        self,
        embed_dim: int,
        width: int = 64,
        depth: int = 2,
        mixer: str = "conv",
        kernel_size: int = 4,
        horizons: tuple[int, ...] = (1, 16),
        window: int | None = None,
        codes: int = 64,
        expansion_ratio: float = 8 / 3,
        mixer_kwargs: dict[str, Any] | None = None,
        rope: bool = True,
    ):
        super().__init__()
        if check_mixer(mixer) not in TEMPORAL_MIXERS:
            raise UserError(f"the temporal model is causal: choose one of {', '.join(TEMPORAL_MIXERS)}, not {mixer!r}")
        if window is not None and window < 1:
            raise UserError(f"--window must be at least 1 frame, got {window}")
        self.mixer, self.window = mixer, window if mixer == "attn_causal" else None
        self.embed_dim, self.num_codes, self.horizons = embed_dim, codes, tuple(horizons)
        self.in_proj = nn.Linear(embed_dim, width)
        kwargs = dict(layout="1d", **(mixer_kwargs or {}))
        if mixer == "attn_causal" and not self.window:
            kwargs.setdefault("rope", rope)  # relative positions: how long ago a frame was, not only its content
        self.blocks = nn.ModuleList(
            GatedCNNBlock(width, expansion_ratio, kernel_size, mixer=mixer, mixer_kwargs=kwargs) for _ in range(depth)
        )
        if self.window:
            for block in self.blocks:
                block.mixer = WindowedAttention(block.split_indices[2], kernel_size, self.window, rope)
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, len(self.horizons) * codes)
        self.apply(SequenceModel._init_weights)
        for m in self.modules():  # the mixers' own initialisation (the SSM's Δ) last, as SequenceModel does
            if m is not self and callable(getattr(m, "init_weights", None)):
                m.init_weights()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, p in self.named_parameters() if getattr(p, "_no_weight_decay", False)}

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.norm(x)).unflatten(-1, (len(self.horizons), self.num_codes))
        return logits.log_softmax(-1)

    def hidden(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, width): the last block's output, what the head reads (the memory probe's features)."""
        x = self.in_proj(embeddings)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, embeddings: torch.Tensor, state: list[Any] | None = None):
        """(B, T, D) -> log p (B, T, len(horizons), K); [:, t, i]: the distribution of frame t + horizons[i]'s code.

        With `state` (from `init_state` or a previous call) the frames are the next chunk of a stream: returns
        (log p, the state after the chunk), the same numbers as the whole stream at once (gradients flow through the
        state; detach it between updates for truncated back-propagation)."""
        if state is None:
            return self._predict(self.hidden(embeddings))
        x, new_state = self.in_proj(embeddings), []
        for block, s in zip(self.blocks, state):
            x, s = block.stream(x, s)
            new_state.append(s)
        return self._predict(x), new_state

    def init_state(self, batch: int = 1, device: torch.device | None = None) -> list[Any]:
        """The state before the first frame, one entry per block (see `step`)."""
        return [block.mixer.init_state(batch, device) for block in self.blocks]

    def step(self, embedding: torch.Tensor, state: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """One frame's embedding (B, D) -> (log p (B, len(horizons), K), the new state)."""
        x = self.in_proj(embedding)
        new_state = []
        for block, s in zip(self.blocks, state):
            x, s = block.step(x, s)
            new_state.append(s)
        return self._predict(x), new_state


def state_bytes(state: Any) -> int:
    """Bytes held by the tensors of a (nested) stream state."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


def stream_checkpoints(
    model: TemporalModel, embeddings: torch.Tensor, counts: tuple[int, ...], stepped: int = 50
) -> Iterator[tuple[int, list[Any], list[float]]]:
    """Stream `embeddings` (T, B, D) through `model` and yield, for each n of `counts` (ascending), (n, the state after
    n frames, the seconds of each of the last `stepped` frames before n, run one at a time with `step`).

    The frames before those go through as one chunk (`model(x, state)`), which leaves the state frame-by-frame steps
    leave (to float32 rounding; unwindowed attention's cache holds the same keys but is sized to the chunk rather
    than doubled step by step), so reaching frame 10,000 costs a fraction of 10,000 steps.
    """
    state, done = model.init_state(embeddings.shape[1], embeddings.device), 0
    with torch.no_grad():
        for n in sorted(counts):
            start = max(done, n - stepped)
            if start > done:
                _, state = model(embeddings[done:start].transpose(0, 1), state)
            times = []
            for t in range(start, n):
                t0 = time.perf_counter()
                _, state = model.step(embeddings[t], state)
                times.append(time.perf_counter() - t0)
            done = n
            yield n, state, times


def temporal_params(embed_dim: int, width: int, mixer: str, **kwargs: Any) -> int:
    return sum(p.numel() for p in TemporalModel(embed_dim, width=width, mixer=mixer, **kwargs).parameters())


def matched_widths(embed_dim: int, width: int, mixers: tuple[str, ...] = TEMPORAL_MIXERS, **kwargs: Any) -> dict:
    """{mixer: width} whose parameter counts are closest to the conv model's at `width` (same depth and kernel).

    The SSM's projections and attention's q, k, v and output projections add parameters the conv does not have;
    narrowing those models keeps the comparison at one size (the tests hold them within 10 %).
    """
    target = temporal_params(embed_dim, width, "conv", **kwargs)
    out = {}
    for mixer in mixers:
        candidates = range(max(8, width // 2), width + 1, 2) if mixer != "conv" else [width]
        out[mixer] = min(candidates, key=lambda w: abs(temporal_params(embed_dim, w, mixer, **kwargs) - target))
    return out


class FrameKNN(nn.Module):
    """The per-frame baseline: mean distance of an embedding to its k nearest normal training embeddings.

    Example:
        >>> knn = FrameKNN(torch.randn(500, 32), k=5)
        >>> knn(torch.randn(2, 10, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, bank: torch.Tensor, k: int = 5):
        super().__init__()
        self.k = min(k, len(bank))
        self.register_buffer("bank", bank.float().contiguous())

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (...) distances (no state: a frame is judged alone)."""
        flat = embeddings.reshape(-1, embeddings.shape[-1]).float()
        # the direct formula for any batch: the matmul form cdist picks for larger batches rounds differently, and a
        # streamed frame must get the distance the offline batch gave it
        d = torch.cdist(flat, self.bank, compute_mode="donot_use_mm_for_euclid_dist")
        d = d.topk(self.k, dim=1, largest=False).values.mean(1)
        return d.reshape(embeddings.shape[:-1])
