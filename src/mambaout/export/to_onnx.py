"""PyTorch -> ONNX: dynamic batch and spatial size, the opset and the model's facts written into the file.

Exported with torch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`): on torch 2.14 the
torch.export-based one took minutes for the SSM graph and specialised a reshape of it to the example's size (wrong
results at other sizes), while the TorchScript one keeps every size symbolic and takes seconds.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from mambaout.errors import UserError
from mambaout.export.availability import require
from mambaout.export.graph import exportable, output_names
from mambaout.export.scan import DEFAULT_MAX_TOKENS

DEFAULT_OPSET = 18
INPUT_NAME = "images"


def check_image_size(image_size: tuple[int, int]) -> tuple[int, int]:
    h, w = (int(s) for s in image_size)
    if h < 32 or w < 32:
        raise UserError(f"--image-size {h} {w} is too small; MambaOut needs at least 32 x 32 (stride 32)")
    return h, w


def export_onnx(
    model: nn.Module,
    path: str | Path,
    features: bool = False,
    opset: int = DEFAULT_OPSET,
    image_size: tuple[int, int] = (224, 224),
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> Path:
    """Write `model` (classifier, or its four feature maps with `features=True`) to an ONNX file and return its path.

    Input `images` (batch, 3, height, width) float32, normalised as the model's `pretrained_cfg` says; batch, height
    and width are dynamic (`image_size` is only the tracing example). SSM mixers are right up to `max_tokens` tokens
    in their finest stage (H/4 * W/4). Metadata: model, mixer, opset, outputs, mean, std, max_tokens.

    Example:
        >>> export_onnx(create_model("mambaout_femto"), "femto.onnx")  # doctest: +SKIP
    """
    onnx = require("onnx")
    h, w = check_image_size(image_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs = output_names(model, features)
    dynamic = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    for name in outputs:
        dynamic[name] = {0: "batch"} if name == "logits" else {0: "batch", 2: f"{name}_height", 3: f"{name}_width"}
    example = torch.randn(2, model.in_chans, h, w)
    with exportable(model, features, max_tokens) as graph, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*will be removed.*")
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes=dynamic,
        )
    proto = onnx.load(str(path))
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    facts = {
        "model": getattr(model, "variant", type(model).__name__),
        "mixer": getattr(model, "mixer", "conv"),
        "opset": str(opset),
        "outputs": ",".join(outputs),
        "mean": ",".join(str(v) for v in cfg.get("mean", ())),
        "std": ",".join(str(v) for v in cfg.get("std", ())),
        "max_tokens": str(max_tokens),
    }
    onnx.helper.set_model_props(proto, facts)
    onnx.save(proto, str(path))
    return path
