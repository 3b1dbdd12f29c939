"""Inference: classify images with a MambaOut model (`predict`) and the opt-in fast path (`fast`)."""

from mambaout.infer.predict import load_image, predict

__all__ = ["load_image", "predict"]
