"""Detection and segmentation with MambaOut backbones: Mask R-CNN + FPN on COCO, UperNet on ADE20K (paper §5).

The authors released only classification code; this is the rest, built on torchvision's detection models.

Example:
    >>> import mambaout.dense as d
    >>> m = d.mask_rcnn("mambaout_tiny", num_classes=81, backbone_weights="mambaout_tiny.pth")  # doctest: +SKIP
    >>> m = d.upernet("mambaout_tiny", num_classes=150)  # doctest: +SKIP
"""

import importlib

# name -> module; loaded on first use so that `mambaout --help` does not import torchvision's detection models
_WHERE = {
    "ADE20K": "ade20k",
    "MambaOutBackbone": "backbone",
    "CocoInstances": "coco",
    "PAPER_COST": "cost",
    "cost_table": "cost",
    "detection_cost": "cost",
    "segmentation_cost": "cost",
    "DetectConfig": "configs",
    "SegmentConfig": "configs",
    "evaluate_detector": "detect",
    "load_detector": "detect",
    "train_detector": "detect",
    "BackboneFPN": "maskrcnn",
    "mask_rcnn": "maskrcnn",
    "evaluate_segmenter": "segment",
    "load_segmenter": "segment",
    "train_segmenter": "segment",
    "UperNet": "uperhead",
    "upernet": "uperhead",
}

__all__ = [
    "ADE20K",
    "PAPER_COST",
    "BackboneFPN",
    "CocoInstances",
    "DetectConfig",
    "MambaOutBackbone",
    "SegmentConfig",
    "UperNet",
    "cost_table",
    "detection_cost",
    "evaluate_detector",
    "evaluate_segmenter",
    "load_detector",
    "load_segmenter",
    "mask_rcnn",
    "segmentation_cost",
    "train_detector",
    "train_segmenter",
    "upernet",
]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"mambaout.dense.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'mambaout.dense' has no attribute {name!r}")
