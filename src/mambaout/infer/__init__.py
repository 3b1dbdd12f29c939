"""Inference: classify images (`predict`) and the opt-in fast path (`fast`); the fused CPU blocks it builds on
live beside the model they fuse (`mambaout.models.fuse`)."""

from mambaout.infer.predict import load_image, predict
from mambaout.models.fuse import FusedGatedCNNBlock, fuse_for_inference, is_fused, unfuse

__all__ = ["FusedGatedCNNBlock", "fuse_for_inference", "is_fused", "load_image", "predict", "unfuse"]
