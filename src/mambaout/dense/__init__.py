"""Detection and segmentation with MambaOut backbones: Mask R-CNN + FPN on COCO, UperNet on ADE20K (paper §5).

The authors released only classification code; this is the rest, built on torchvision's detection models.

Example:
    >>> import mambaout.dense as d
    >>> m = d.mask_rcnn("mambaout_tiny", num_classes=81, backbone_weights="mambaout_tiny.pth")  # doctest: +SKIP
    >>> m = d.upernet("mambaout_tiny", num_classes=150)  # doctest: +SKIP
"""

from mambaout.dense.ade20k import ADE20K
from mambaout.dense.backbone import MambaOutBackbone
from mambaout.dense.coco import CocoInstances
from mambaout.dense.cost import PAPER_COST, cost_table, detection_cost, segmentation_cost
from mambaout.dense.detect import DetectConfig, evaluate_detector, load_detector, train_detector
from mambaout.dense.mask_rcnn import BackboneFPN, mask_rcnn
from mambaout.dense.segment import SegmentConfig, evaluate_segmenter, load_segmenter, train_segmenter
from mambaout.dense.upernet import UperNet, upernet

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
