"""Inference: classify images (`predict`), the fused CPU blocks (`fuse`) and the opt-in fast path (`fast`)."""

from mambaout.infer.fuse import FusedGatedCNNBlock, fuse_for_inference, is_fused, unfuse
from mambaout.infer.predict import load_image, predict

__all__ = ["FusedGatedCNNBlock", "fuse_for_inference", "is_fused", "load_image", "predict", "unfuse"]
