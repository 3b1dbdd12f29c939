"""Parameter and MAC counts.

MACs are counted, not estimated: `torch.utils.flop_counter.FlopCounterMode` records every convolution and matrix
product of one forward pass (FLOPs / 2 = MACs). The paper's tables were made with fvcore, which also charges each
LayerNorm 5 operations per element; `include_norms=True` (the default) adds exactly that, and the five paper
models then round to the printed 1.2 / 1.5 / 4.5 / 9.0 / 15.8 G (conv and matmul alone: 1.15 / 1.51 / 4.47 / 8.94 /
15.79 G, so femto and small would print 0.1 G low). Activations, the gate product and pooling are not counted, as
in fvcore.

The fused CPU inference blocks (`mambaout.models.fuse`) call oneDNN's fused linear op, which the counter does not
know; `FUSED_OP_FLOPS` tells it that op's cost (that of the `addmm` it replaces), so a fused model counts the same as
its reference and any model can be counted as it is.

Operations a FLOP counter cannot see into (a fused selective scan, an attention kernel) declare their own cost:
a module with a method `extra_macs(inputs, output) -> int` has that number added for each of its forward calls.
The formulas live next to those modules (see `mambaout.mixers` and `mambaout.ssm`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def fused_linear_flops(x_shape: Sequence[int], *args: Any, out_shape: Sequence[int], **kwargs: Any) -> int:
    """oneDNN's fused linear, both overloads (`default`: act(X W^T + b); `binary`: X W^T + b + other).

    X is (..., K) and the output (..., N): 2·K FLOPs per output element, as FlopCounterMode counts `addmm`; the fused
    activation or residual add is not counted, as the separate ones are not.
    """
    return 2 * math.prod(out_shape) * x_shape[-1]


_fused_linear = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
FUSED_OP_FLOPS = {_fused_linear: fused_linear_flops} if _fused_linear is not None else {}


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


@torch.no_grad()
def count_macs(
    model: nn.Module,
    input_shape: Sequence[int] = (1, 3, 224, 224),
    inputs: torch.Tensor | None = None,
    include_norms: bool = True,
) -> int:
    """Multiply-accumulates of one forward pass at `input_shape` (batch included), counted by FlopCounterMode.

    Example:
        >>> count_macs(create_model("mambaout_femto")) / 1e9  # doctest: +SKIP
        1.15...
    """
    if inputs is None:
        ref = next(model.parameters(), torch.empty(0))
        inputs = torch.randn(*input_shape, device=ref.device, dtype=ref.dtype)
    extra = [0]

    def add(n: int) -> None:
        extra[0] += int(n)

    hooks = [
        m.register_forward_hook(lambda mod, inp, out: add(mod.extra_macs(inp, out)))
        for m in model.modules()
        if callable(getattr(m, "extra_macs", None))
    ]
    if include_norms:  # fvcore's convention: 5 per element for an affine norm, 4 without
        hooks += [
            m.register_forward_hook(lambda mod, inp, out: add(inp[0].numel() * (5 if mod.weight is not None else 4)))
            for m in model.modules()
            if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm))
        ]
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, custom_mapping=FUSED_OP_FLOPS) as counter:
            model(inputs)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return counter.get_total_flops() // 2 + extra[0]
