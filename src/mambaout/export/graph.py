"""What an exporter traces: the model as `create_model` returns it, in eval mode, with its scans made exportable.

A classifier graph has one output, `logits` (batch, classes). A backbone graph (`features=True`) has the four stage
outputs of `forward_intermediates`, NCHW, named by stride: `stride4`, `stride8`, `stride16`, `stride32`.
While the graph is traced, SSM mixers are swapped for `UnrolledSSMMixer` (same weights, plain tensor ops) and every
Gated CNN block runs `split_forward`: the same arithmetic with fc1 and fc2 as blocks of their weights, so that the
graph holds no channel split and no concat. Measured on a 2-core Xeon (femto, 224 x 224, OpenVINO fp32 at a static
shape): the split/concat form spent a third of its time in VariadicSplit, Concat and the layout reorders around
them; this form ran 1.6x faster at batch 8 and 1.6-1.7x at batch 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from mambaout.export.scan import DEFAULT_MAX_TOKENS, UnrolledSSMMixer
from mambaout.mixers.ssm import SSMMixer
from mambaout.models.fuse import fuse_for_inference, is_fused, unfuse
from mambaout.models.mambaout import GatedCNNBlock
from mambaout.ssm.unrolled import rounds_for


class FeatureMaps(nn.Module):
    """(B, 3, H, W) -> the four stage outputs, NCHW (strides 4, 8, 16, 32), as a tuple (one graph output each)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.forward_intermediates(x, intermediates_only=True, output_fmt="NCHW"))


def split_forward(block: GatedCNNBlock, x: torch.Tensor) -> torch.Tensor:
    """`GatedCNNBlock.forward` with no channel split or concat: equal to it to float32 rounding.

    fc1's output (g, i, c) is computed as four row blocks of its weight, g in two parts (g_i gating i, g_c gating
    the mixed c), and fc2 as two column blocks whose products are added:
    fc2(act(g) * cat(i, c)) = W2[:, :n_i] (act(g_i) * i) + W2[:, n_i:] (act(g_c) * c) + b2.
    """
    hidden, n_i, _ = block.split_indices
    w1, b1, w2 = block.fc1.weight, block.fc1.bias, block.fc2.weight
    xn = block.norm(x)
    rows = (slice(0, n_i), slice(n_i, hidden), slice(hidden, hidden + n_i), slice(hidden + n_i, 2 * hidden))
    g_i, g_c, i, c = (F.linear(xn, w1[r], b1[r]) if r.stop > r.start else None for r in rows)
    c = block.conv(c.permute(0, 3, 1, 2)).permute(0, 2, 3, 1) if hasattr(block, "conv") else block.mixer(c)
    y = F.linear(block.act(g_c) * c, w2[:, n_i:], block.fc2.bias)
    if n_i:  # no zero-width product in the graph when every hidden channel is mixed
        y = y + F.linear(block.act(g_i) * i, w2[:, :n_i])
    return block.drop_path(block.ls(y)) + x


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
    blocks = [m for m in model.modules() if isinstance(m, GatedCNNBlock)]
    own_forward = [vars(block).get("forward") for block in blocks]  # an enclosing `exportable`'s, say
    was_training, was_fused = model.training, is_fused(model)
    try:
        for block in blocks:  # an instance attribute: nn.Module.__call__ finds it before the class's forward
            block.forward = partial(split_forward, block)
        unfuse(model)  # the oneDNN-fused CPU blocks are no exporter's op: export the reference arithmetic
        model.eval()
        with torch.no_grad():
            yield FeatureMaps(model) if features else model
    finally:
        for block, forward in zip(blocks, own_forward):
            if forward is None:
                vars(block).pop("forward", None)
            else:
                block.forward = forward
        for parent, name, child in swapped:
            setattr(parent, name, child)
        if was_fused:
            fuse_for_inference(model)
        model.train(was_training)
