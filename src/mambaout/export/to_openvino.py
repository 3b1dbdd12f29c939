"""PyTorch -> OpenVINO IR (.xml + .bin): through the ONNX graph, so both formats hold the same computation.

`openvino.convert_model` reads the ONNX file (dynamic batch and spatial size carry over) and `openvino.save_model`
writes the IR with float32 weights (no fp16 compression: the IR must equal PyTorch to 1e-4).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from torch import nn

from mambaout.export.availability import require
from mambaout.export.scan import DEFAULT_MAX_TOKENS
from mambaout.export.to_onnx import DEFAULT_OPSET, export_onnx


def onnx_to_openvino(onnx_path: str | Path, xml_path: str | Path) -> Path:
    """Convert an ONNX file to OpenVINO IR at `xml_path` (the .bin beside it)."""
    ov = require("openvino")
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path


def export_openvino(
    model: nn.Module,
    path: str | Path,
    features: bool = False,
    opset: int = DEFAULT_OPSET,
    image_size: tuple[int, int] = (224, 224),
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> Path:
    """Write `model` as OpenVINO IR at `path` (.xml); same inputs, outputs and arguments as `export_onnx`.

    Example:
        >>> export_openvino(create_model("mambaout_tiny"), "tiny_features/model.xml", features=True)  # doctest: +SKIP
    """
    require("openvino")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "model.onnx", features, opset, image_size, max_tokens)
        return onnx_to_openvino(onnx_path, path)
