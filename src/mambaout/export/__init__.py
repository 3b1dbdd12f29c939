"""Deployment: export to ONNX and OpenVINO IR, run the exports, quantize them to int8, compare the engines.

Data flow, one file each: `scan` (the selective scan as plain tensor ops) -> `graph` (what is traced: the model
or its four feature maps, SSM mixers unrolled) -> `to_onnx` / `to_openvino` (the formats) -> `formats`
(`export_model`, where files go) -> `engines` (`load_engine`: torch, onnxruntime, openvino behind one call)
-> `calibration` + `quantize` (int8 with each engine's own tool) -> `bench` (`compare_engines`). `cli` is
`mambaout export`. Other graphs (e.g. a streaming detector's per-frame step graph) get their own module beside
`graph` with their own exporter, reusing `to_onnx`'s conventions, `engines` and `quantize` unchanged.

Needs the optional extra: `pip install -e ".[export]"`.
"""

from mambaout.export.engines import ENGINES, Engine, load_engine, relative_error
from mambaout.export.formats import FORMATS, export_model
from mambaout.export.graph import exportable
from mambaout.export.to_onnx import DEFAULT_OPSET, export_onnx
from mambaout.export.to_openvino import export_openvino

__all__ = [
    "DEFAULT_OPSET",
    "ENGINES",
    "FORMATS",
    "Engine",
    "export_model",
    "export_onnx",
    "export_openvino",
    "exportable",
    "load_engine",
    "relative_error",
]
