"""Mask R-CNN with a MambaOut backbone and FPN, built from torchvision's detection models.

Heads as in mmdetection's `mask_rcnn_r50_fpn_1x` (what the paper's Table 2 used): FPN with 256 channels and a max-pooled
fifth level, an RPN with one 3x3 conv and 3 anchors per location, RoIAlign 7x7 into two 1024-wide fc layers, and a
4-conv mask head on 14x14 RoIs. mmdetection keeps 1000 RPN proposals per training image, torchvision 2000; we set 1000.
Images are resized inside the model (`GeneralizedRCNNTransform`): shorter side `min_size` (one value picked at random
per batch when several are given: multi-scale training), longer side at most `max_size`, ImageNet mean/std.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from mambaout.dense.backbone import MambaOutBackbone
from mambaout.errors import UserError


class BackboneFPN(nn.Module):
    """MambaOut features -> FPN maps '0'..'3' (strides 4..32) and 'pool' (stride 64), each `out_channels` wide."""

    def __init__(self, body: MambaOutBackbone, out_channels: int = 256):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.out_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels  # torchvision's detectors read this

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


def mask_rcnn(
    backbone: str,
    num_classes: int = 81,
    backbone_weights: str | os.PathLike | Mapping[str, Any] | None = None,
    drop_path_rate: float | None = None,
    mixer: str = "conv",
    min_size: int | Sequence[int] = 800,
    max_size: int = 1333,
    fpn_channels: int = 256,
    box_fc_channels: int = 1024,
    mask_channels: int = 256,
    **maskrcnn_kwargs: Any,
) -> MaskRCNN:
    """Mask R-CNN + FPN on a MambaOut variant; `num_classes` counts the background (COCO: 81).

    The head widths default to the paper's (mmdet's `neck.out_channels`, `bbox_head.fc_out_channels`,
    `mask_head.conv_out_channels`); narrower ones make CPU prototypes fast. Other keyword arguments go to torchvision's
    `MaskRCNN` (e.g. `box_batch_size_per_image`).

    Example:
        >>> model = mask_rcnn("mambaout_pico", num_classes=3, min_size=64, max_size=64, fpn_channels=32)
        >>> model = mask_rcnn("mambaout_tiny", num_classes=81, backbone_weights="mambaout_tiny.pth")  # doctest: +SKIP
    """
    if num_classes < 2:
        raise UserError(f"num_classes counts the background too, so it must be at least 2; got {num_classes}")
    body = MambaOutBackbone(backbone, weights=backbone_weights, drop_path_rate=drop_path_rate, mixer=mixer)
    pooled = fpn_channels * 7 * 7  # RoIAlign 7x7 on the FPN maps
    kwargs = dict(
        rpn_post_nms_top_n_train=1000,  # mmdetection's 1x config
        box_head=TwoMLPHead(pooled, box_fc_channels),
        box_predictor=FastRCNNPredictor(box_fc_channels, num_classes),
        mask_head=MaskRCNNHeads(fpn_channels, [mask_channels] * 4, dilation=1),
        mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes),
    )
    kwargs.update(maskrcnn_kwargs)
    return MaskRCNN(
        BackboneFPN(body, fpn_channels),
        num_classes=None,  # the predictors above carry it
        min_size=tuple(min_size) if isinstance(min_size, Sequence) else min_size,
        max_size=max_size,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        **kwargs,
    )
