"""Detection and segmentation with MambaOut backbones: Mask R-CNN + FPN on COCO, UperNet on ADE20K (paper §5).

The authors released only classification code; this is the rest, built on torchvision's detection models.

Example:
    >>> import mambaout.dense as d
    >>> m = d.mask_rcnn("mambaout_tiny", num_classes=81, backbone_weights="mambaout_tiny.pth")  # doctest: +SKIP
    >>> m = d.upernet("mambaout_tiny", num_classes=150)  # doctest: +SKIP
"""

import importlib

# module -> the names it offers here; each module loads on first use of one of its names, so that `mambaout --help`
# does not import torchvision's detection models
_EXPORTS = {
    "ade20k": ("ADE20K",),
    "backbone": ("MambaOutBackbone",),
    "coco": ("CocoInstances",),
    "configs": ("DetectConfig", "SegmentConfig"),
    "cost": ("PAPER_COST", "cost_table", "detection_cost", "segmentation_cost"),
    "detect": ("evaluate_detector", "load_detector", "train_detector"),
    "maskrcnn": ("BackboneFPN", "mask_rcnn"),
    "segment": ("evaluate_segmenter", "load_segmenter", "train_segmenter"),
    "uperhead": ("UperNet", "upernet"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"mambaout.dense.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'mambaout.dense' has no attribute {name!r}")
