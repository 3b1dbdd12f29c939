"""`export_model`: one entry point over the formats, resolving where the files go."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from mambaout.errors import UserError
from mambaout.export.scan import DEFAULT_MAX_TOKENS
from mambaout.export.to_onnx import DEFAULT_OPSET, export_onnx
from mambaout.export.to_openvino import export_openvino

FORMATS = {"onnx": ".onnx", "openvino": ".xml"}  # format -> suffix of the file an engine loads
ENGINE_OF = {"onnx": "onnxruntime", "openvino": "openvino"}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def resolve_output(output: str | Path, fmt: str) -> Path:
    """The model file for `output`: itself if it ends in the format's suffix, else `output/model<suffix>` (a folder)."""
    suffix = FORMATS[check_format(fmt)]
    output = Path(output)
    if output.suffix == suffix:
        return output
    if output.suffix and not output.is_dir():
        raise UserError(f"--output {output} does not end in {suffix}; name a {suffix} file or a folder for {fmt}")
    return output / f"model{suffix}"


def export_model(
    model: nn.Module,
    fmt: str,
    output: str | Path,
    features: bool = False,
    opset: int = DEFAULT_OPSET,
    image_size: tuple[int, int] = (224, 224),
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> Path:
    """Export `model` as `fmt` ("onnx" or "openvino") to `output` (a file, or a folder) and return the model file.

    Example:
        >>> export_model(create_model("mambaout_femto"), "openvino", "femto_ir/")  # doctest: +SKIP
        PosixPath('femto_ir/model.xml')
    """
    path = resolve_output(output, fmt)
    exporter = export_onnx if fmt == "onnx" else export_openvino
    return exporter(model, path, features=features, opset=opset, image_size=image_size, max_tokens=max_tokens)
