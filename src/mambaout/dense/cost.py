"""Parameters and MACs of the dense models, counted the way the paper's Tables 2 and 3 were made.

The paper used mmdetection's and mmsegmentation's `get_flops` (mmcv's counter: convs and linear layers as MACs).
- Mask R-CNN, one 800x1280 image (mmdet's `forward_dummy`): backbone + FPN, the RPN head on all five levels, then the
  box head on 1000 proposals and the mask head on the first 100 of them. No resizing, no NMS, no RoI sampling.
- UperNet, one 512x2048 image: backbone + decode head (the auxiliary head is training-only and not counted, but its
  parameters are, as mmcv counts every parameter of the model).
MACs come from `mambaout.measure.cost.count_macs` (FlopCounterMode conv + matmul, plus fvcore's 5 per element for each
norm). The models are built on the meta device by default: shapes only, so the count is instant and allocates nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mambaout.dense.maskrcnn import mask_rcnn
from mambaout.dense.uperhead import upernet
from mambaout.measure.cost import count_macs, count_params

# Paper Tables 2 and 3: (params M, GMACs).
PAPER_COST: dict[str, dict[str, tuple[float, float]]] = {
    "detect": {"mambaout_tiny": (43, 262), "mambaout_small": (65, 354), "mambaout_base": (100, 495)},
    "segment": {"mambaout_tiny": (54, 938), "mambaout_small": (76, 1032), "mambaout_base": (112, 1178)},
}


class MaskRCNNDummyForward(nn.Module):
    """mmdetection's `TwoStageDetector.forward_dummy`: the fixed-work forward its `get_flops` counts."""

    def __init__(self, model: nn.Module, num_proposals: int = 1000, num_mask_rois: int = 100):
        super().__init__()
        self.model, self.num_proposals, self.num_mask_rois = model, num_proposals, num_mask_rois

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        heads = self.model.roi_heads
        features = self.model.backbone(images)
        objectness, deltas = self.model.rpn.head(list(features.values()))
        # RoIAlign is not counted (by mmcv neither) and the proposals' positions change nothing, so the pooled RoI
        # features only need their shape: (RoIs, 256, 7, 7) for boxes, (RoIs, 256, 14, 14) for masks. This keeps the
        # count free of data-dependent ops, so it runs on the meta device.
        channels = self.model.backbone.out_channels
        box_rois = images.new_zeros(self.num_proposals, channels, *heads.box_roi_pool.output_size)
        mask_rois = images.new_zeros(self.num_mask_rois, channels, *heads.mask_roi_pool.output_size)
        scores, box_deltas = heads.box_predictor(heads.box_head(box_rois))
        masks = heads.mask_predictor(heads.mask_head(mask_rois))
        return scores, box_deltas, masks


def detection_cost(
    backbone: str, height: int = 800, width: int = 1280, num_classes: int = 81, device: str = "meta", **kwargs: Any
) -> dict[str, float]:
    """Params and MACs of Mask R-CNN + FPN on `backbone` for one `height` x `width` image (paper: 800x1280).

    Example:
        >>> detection_cost("mambaout_tiny")["params"] / 1e6  # doctest: +SKIP
        43.1...
    """
    with torch.device(device):
        model = mask_rcnn(backbone, num_classes=num_classes, drop_path_rate=0.0, **kwargs).eval()
        images = torch.randn(1, 3, height, width)
    return dict(
        params=count_params(model),
        macs=count_macs(MaskRCNNDummyForward(model), inputs=images),
        backbone_params=count_params(model.backbone.body),
        backbone_macs=count_macs(model.backbone.body, inputs=images),
    )


def segmentation_cost(
    backbone: str, height: int = 512, width: int = 2048, num_classes: int = 150, device: str = "meta", **kwargs: Any
) -> dict[str, float]:
    """Params (auxiliary head included) and MACs (decode path only) of UperNet on `backbone` (paper: 512x2048).

    Example:
        >>> segmentation_cost("mambaout_tiny")["macs"] / 1e9  # doctest: +SKIP
        9...
    """
    with torch.device(device):
        model = upernet(backbone, num_classes=num_classes, drop_path_rate=0.0, **kwargs).eval()
        images = torch.randn(1, 3, height, width)
    return dict(
        params=count_params(model),
        macs=count_macs(model, inputs=images),
        backbone_params=count_params(model.backbone),
        backbone_macs=count_macs(model.backbone, inputs=images),
    )


def cost_table(task: str, backbones: list[str], height: int | None = None, width: int | None = None) -> list[dict]:
    """One row per backbone: measured params (M) and GMACs next to the paper's, for `task` 'detect' or 'segment'."""
    fn, size = (detection_cost, (800, 1280)) if task == "detect" else (segmentation_cost, (512, 2048))
    h, w = height or size[0], width or size[1]
    rows = []
    for name in backbones:
        c = fn(name, height=h, width=w)
        paper = PAPER_COST[task].get(name) if (h, w) == size else None
        rows.append(
            dict(
                backbone=name,
                input=f"{h}x{w}",
                params_m=c["params"] / 1e6,
                gmacs=c["macs"] / 1e9,
                backbone_gmacs=c["backbone_macs"] / 1e9,
                paper_params_m=paper[0] if paper else None,
                paper_gmacs=paper[1] if paper else None,
            )
        )
    return rows
