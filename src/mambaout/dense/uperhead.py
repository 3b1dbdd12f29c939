"""UperNet (Xiao et al., 2018) with a MambaOut backbone, as mmsegmentation's `UPerHead` + auxiliary `FCNHead`.

Decode head (512 channels): a pyramid pooling module (average pools to 1, 2, 3, 6 cells, 1x1 conv each, upsampled and
concatenated with the input, 3x3 bottleneck) on the stride-32 map; 1x1 lateral convs on the other three maps and a
top-down path (upsample + add); a 3x3 conv per level; all four levels upsampled to stride 4, concatenated and fused by
a 3x3 conv; dropout 0.1 and a 1x1 classifier. Every conv is conv -> BatchNorm -> ReLU (mmseg's ConvModule; BN becomes
SyncBN under DDP). Auxiliary head on the stride-16 map (one 3x3 conv to 256 channels), used in training only with loss
weight 0.4, as in the standard ADE20K configs. Logits come back at the input resolution.

Why not segmentation-models-pytorch's UPerNet: its decoder is internal API, expects a six-level feature list including
strides 1 and 2, normalises features itself (the backbone already does) and has no auxiliary head; the rest is a few
torchvision `Conv2dNormActivation` blocks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import Conv2dNormActivation

from mambaout.dense.backbone import MambaOutBackbone
from mambaout.errors import UserError


def _conv(in_channels: int, out_channels: int, kernel_size: int) -> Conv2dNormActivation:
    return Conv2dNormActivation(in_channels, out_channels, kernel_size, norm_layer=nn.BatchNorm2d, inplace=False)


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling: x -> cat(x, up(conv(pool_s(x))) for s in scales) -> 3x3 conv."""

    def __init__(self, in_channels: int, channels: int, scales: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), _conv(in_channels, channels, 1)) for s in scales
        )
        self.bottleneck = _conv(in_channels + len(scales) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [_resize(stage(x), x.shape[2:]) for stage in self.stages]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class UPerHead(nn.Module):
    """Feature maps at strides 4..32 -> (B, num_classes, H/4, W/4) logits."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 512, dropout: float = 0.1):
        super().__init__()
        self.ppm = PyramidPooling(in_channels[-1], channels)
        self.lateral_convs = nn.ModuleList(_conv(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(_conv(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = _conv(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)] + [self.ppm(features[-1])]
        for i in range(len(laterals) - 1, 0, -1):  # top-down: coarse maps added into finer ones
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        outs = [outs[0]] + [_resize(o, outs[0].shape[2:]) for o in outs[1:]]
        return self.classifier(self.dropout(self.fpn_bottleneck(torch.cat(outs, dim=1))))


class FCNHead(nn.Module):
    """The auxiliary head: one 3x3 conv -> dropout -> 1x1 classifier."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256, dropout: float = 0.1):
        super().__init__()
        self.conv = _conv(in_channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


class UperNet(nn.Module):
    """Backbone + UPerHead (+ FCN auxiliary head on stage `aux_index`), torchvision's segmentation-model contract.

    forward(x) returns {"out": (B, K, H, W) logits} and, in training mode, also "aux" (the auxiliary logits).
    """

    def __init__(
        self,
        backbone: MambaOutBackbone,
        num_classes: int,
        channels: int = 512,
        aux_channels: int | None = 256,
        aux_index: int = 2,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = backbone
        self.decode_head = UPerHead(backbone.out_channels, num_classes, channels)
        self.aux_index = aux_index
        self.aux_head = FCNHead(backbone.out_channels[aux_index], num_classes, aux_channels) if aux_channels else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        out = {"out": _resize(self.decode_head(features), x.shape[2:])}
        if self.training and self.aux_head is not None:
            out["aux"] = _resize(self.aux_head(features[self.aux_index]), x.shape[2:])
        return out


def upernet(
    backbone: str,
    num_classes: int = 150,
    backbone_weights: str | os.PathLike | Mapping[str, Any] | None = None,
    drop_path_rate: float | None = None,
    mixer: str = "conv",
    channels: int = 512,
    aux_channels: int | None = 256,
) -> UperNet:
    """UperNet on a MambaOut variant (ADE20K: 150 classes, label 255 ignored).

    Example:
        >>> model = upernet("mambaout_pico", num_classes=4, channels=32, aux_channels=16)
        >>> model.eval()(torch.randn(1, 3, 64, 64))["out"].shape
        torch.Size([1, 4, 64, 64])
    """
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    body = MambaOutBackbone(backbone, weights=backbone_weights, drop_path_rate=drop_path_rate, mixer=mixer)
    return UperNet(body, num_classes, channels=channels, aux_channels=aux_channels)
