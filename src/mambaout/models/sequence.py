"""Isotropic sequence models made of the same Gated CNN blocks as MambaOut, for the study's sequence tasks.

    tokens (B, L) -> Embedding (+ learned positions) -> depth x GatedCNNBlock(mixer, 1-D layout) -> LayerNorm
        -> Linear -> (B, L, classes)

The block is `mambaout.models.mambaout.GatedCNNBlock` itself (its norm, fc1, split, gate and fc2 all act on the last
dimension, so (B, L, C) passes through unchanged); only its mixer gets the 1-D layout. With mixer "conv" it is the
Gated CNN (MambaOut) of the sequence world, a causal depthwise conv1d; "ssm" is a Mamba-style block; "attn_causal"
and "attn" use attention. Every mixer starts with the local conv, which tells tokens their relative order; with
`max_len` the model also adds a learned absolute position embedding (GPT-2's), the same for every mixer, which
attention needs to tell the i-th of several far tokens from the others. A causal conv of kernel k in `depth` blocks
sees at most depth·(k - 1) tokens back, position embedding or not.

Initialisation (`init=`): "mamba" (default) is mamba_ssm's language-model init — PyTorch's default for every Linear
(zero biases), N(0, 0.02) embeddings — and "timm" is MambaOut's truncated normal 0.02 for every Linear. With 0.02 the
fc1 in front of the mixer shrinks its input about 3.6x; the SSM's B and C are then both small and the scan's
long-range term (their product) starts ~13x weaker, which kept the SSM at chance for hundreds of steps on selective
copying (docs/study.md, calibration).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import trunc_normal_
from torch import nn

from mambaout.mixers import check_mixer, init_mixer_weights
from mambaout.models.mambaout import GatedCNNBlock


def sequence_block(
    dim: int, mixer: str, kernel_size: int, expansion_ratio: float, mixer_kwargs: dict[str, Any]
) -> GatedCNNBlock:
    return GatedCNNBlock(dim, expansion_ratio, kernel_size, mixer=mixer, mixer_kwargs=dict(layout="1d", **mixer_kwargs))


class SequenceModel(nn.Module):
    """Embedding -> `depth` Gated CNN blocks with a 1-D mixer -> LayerNorm -> per-token logits.

    Example:
        >>> model = SequenceModel(vocab_size=10, num_classes=8, dim=64, depth=2, mixer="ssm")
        >>> model(torch.randint(0, 10, (2, 100))).shape
        torch.Size([2, 100, 8])
        >>> model(torch.randint(0, 10, (2, 100)), last=4).shape  # the positions a loss reads
        torch.Size([2, 4, 8])
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        dim: int = 64,
        depth: int = 2,
        mixer: str = "conv",
        kernel_size: int = 4,
        expansion_ratio: float = 8 / 3,
        mixer_kwargs: dict[str, Any] | None = None,
        max_len: int | None = None,
        init: str = "mamba",
    ):
        super().__init__()
        self.mixer = check_mixer(mixer)
        self.embed = nn.Embedding(vocab_size, dim)
        # learned absolute positions (up to max_len tokens), added to the token embedding; None: none
        self.pos_embed = nn.Parameter(torch.zeros(max_len, dim)) if max_len else None
        self.blocks = nn.Sequential(
            *[sequence_block(dim, mixer, kernel_size, expansion_ratio, mixer_kwargs or {}) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        if init == "timm":
            self.apply(self._init_weights)
        else:
            self.apply(self._init_mamba)
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        init_mixer_weights(self)  # the mixers' own initialisation (the SSM's Δ bias) last

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            trunc_normal_(m.weight, std=0.02)

    @staticmethod
    def _init_mamba(m: nn.Module) -> None:
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The SSM's A_log and D (marked `_no_weight_decay`) and the position embedding; timm's optimizer factory
        reads this."""
        skip = {n for n, p in self.named_parameters() if getattr(p, "_no_weight_decay", False)}
        return skip | ({"pos_embed"} if self.pos_embed is not None else set())

    def forward(self, tokens: torch.Tensor, last: int | None = None) -> torch.Tensor:
        """Logits (B, L, classes); with `last`, those of the last `last` positions only (B, last, classes): the same
        as `forward(tokens)[:, -last:]` to float32 rounding, the last block's token-wise work, the norm and the head
        done for those positions alone (`GatedCNNBlock.forward_last`)."""
        x = self.embed(tokens)
        if self.pos_embed is not None:
            x = x + self.pos_embed[: tokens.shape[1]]
        if last is None:
            return self.head(self.norm(self.blocks(x)))
        *first, final = self.blocks  # the modules themselves: a slice of nn.Sequential builds a new one every call
        for block in first:
            x = block(x)
        return self.head(self.norm(final.forward_last(x, last)))
