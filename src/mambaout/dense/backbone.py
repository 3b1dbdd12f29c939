"""MambaOut as a dense-task backbone: stride-4/8/16/32 feature maps, each behind its own LayerNorm.

The classifier's spatial features carry no norm (MambaOut's final LN acts after pooling), so, as the ConvNeXt,
MetaFormer and Swin detection/segmentation setups do, every output gets a fresh channel LayerNorm (eps 1e-6). The
classification head is dropped; ImageNet weights load into the trunk.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from timm.layers import LayerNorm2d
from torch import nn

from mambaout.models import create_model
from mambaout.models.variants import VARIANTS


class MambaOutBackbone(nn.Module):
    """(B, 3, H, W) images -> list of NCHW maps at strides 4, 8, 16, 32 (those in `out_indices`).

    Example:
        >>> backbone = MambaOutBackbone("mambaout_pico")
        >>> [tuple(f.shape) for f in backbone(torch.randn(1, 3, 64, 64))]
        [(1, 16, 16, 16), (1, 32, 8, 8), (1, 64, 4, 4), (1, 96, 2, 2)]
    """

    def __init__(
        self,
        name: str,
        weights: str | os.PathLike | Mapping[str, Any] | None = None,
        drop_path_rate: float | None = None,
        mixer: str = "conv",
        out_indices: Sequence[int] = (0, 1, 2, 3),
        **arch_overrides: Any,
    ):
        super().__init__()
        if drop_path_rate is None:
            drop_path_rate = default_drop_path(name)
        # num_classes=0 keeps head.norm/pre_logits, so a classification checkpoint loads strictly; then the head goes.
        self.encoder = create_model(
            name, pretrained=weights, num_classes=0, drop_path_rate=drop_path_rate, mixer=mixer, **arch_overrides
        )
        self.out_indices = self.encoder.prune_intermediate_layers(list(out_indices), prune_head=True)
        self.out_channels = [self.encoder.feature_info[i]["num_chs"] for i in self.out_indices]
        self.strides = [self.encoder.feature_info[i]["reduction"] for i in self.out_indices]
        self.norms = nn.ModuleList(LayerNorm2d(c, eps=1e-6) for c in self.out_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.encoder.forward_intermediates(x, indices=self.out_indices, intermediates_only=True)
        return [norm(f) for norm, f in zip(self.norms, features)]


def default_drop_path(name: str) -> float:
    """The variant's peak drop-path rate from ImageNet training (the paper gives none for dense tasks)."""
    from mambaout.models.factory import check_model_name

    return VARIANTS[check_model_name(name)].drop_path
