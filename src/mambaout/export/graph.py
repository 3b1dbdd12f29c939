"""What an exporter traces: the model as `create_model` returns it, in eval mode, with its scans made exportable.

A classifier graph has one output, `logits` (batch, classes). A backbone graph (`features=True`) has the four stage
outputs of `forward_intermediates`, NCHW, named by stride: `stride4`, `stride8`, `stride16`, `stride32`.
SSM mixers are swapped for `UnrolledSSMMixer` (same weights, plain tensor ops) only while the graph is traced.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from mambaout.export.scan import DEFAULT_MAX_TOKENS, UnrolledSSMMixer
from mambaout.infer.fuse import fuse_for_inference, is_fused, unfuse
from mambaout.mixers.ssm import SSMMixer
from mambaout.ssm.unrolled import rounds_for


class FeatureMaps(nn.Module):
    """(B, 3, H, W) -> the four stage outputs, NCHW (strides 4, 8, 16, 32), as a tuple (one graph output each)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.forward_intermediates(x, intermediates_only=True, output_fmt="NCHW"))


def output_names(model: nn.Module, features: bool) -> list[str]:
    """Names of the graph outputs: ["logits"], or ["stride4", "stride8", "stride16", "stride32"]."""
    if not features:
        return ["logits"]
    return [f"stride{info['reduction']}" for info in model.feature_info]


@contextmanager
def exportable(model: nn.Module, features: bool = False, max_tokens: int = DEFAULT_MAX_TOKENS) -> Iterator[nn.Module]:
    """Inside: the module to trace (the model or its `FeatureMaps`), in eval mode, under no_grad, SSM scans unrolled
    for sequences of up to `max_tokens` steps. On exit the model is restored (mixers and train/eval mode).

    Example:
        >>> with exportable(create_model("mambaout_pico", mixer="ssm")) as graph:
        ...     torch.onnx.export(graph, (torch.randn(1, 3, 64, 64),), "pico.onnx", dynamo=False)  # doctest: +SKIP
    """
    rounds = rounds_for(max_tokens)
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SSMMixer):
                swapped.append((parent, name, child))
                setattr(parent, name, UnrolledSSMMixer(child, rounds))
    was_training, was_fused = model.training, is_fused(model)
    unfuse(model)  # the oneDNN-fused CPU blocks are no exporter's op: export the reference arithmetic
    model.eval()
    try:
        with torch.no_grad():
            yield FeatureMaps(model) if features else model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
        if was_fused:
            fuse_for_inference(model)
        model.train(was_training)
