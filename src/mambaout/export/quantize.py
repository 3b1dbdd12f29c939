"""Int8 post-training quantization with each engine's own tool, calibrated on given images.

- ONNX Runtime: `onnxruntime.quantization.quantize_static`, QDQ format, int8 weights per channel, uint8 activations
  (the x86 default), MinMax calibration. The graph is first run through ORT's `quant_pre_process` (shape inference
  and folding), as ORT's documentation recommends.
- OpenVINO: `nncf.quantize` on the IR (its default "performance" preset: symmetric int8), saved as IR.

Both keep the weights of every convolution and matmul within 7 bits (|w| <= 64; NNCF leaves depthwise convolutions at 8
bits, which gave the same logits with and without VNNI): on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) the int8
kernels multiply uint8 activations by int8 weights with `vpmaddubsw`, which adds each pair of products in int16 and
saturates when 2 * 255 * |w| > 32767. With full 8-bit weights the logits of a mambaout_pico were 0.49 off (relative) on
such a CPU and 0.06 on one with VNNI; with 7-bit weights they are 0.06 on both. The file is built on one CPU and
deployed on another, so the headroom is always kept, whatever CPU exports it (ORT's `reduce_range`, NNCF's
`OverflowFix.ENABLE`; NNCF's default fixes the first layer only). Its cost on a VNNI CPU is about 0.002 relative logit
error (docs/export.md, "Int8").
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from mambaout.export.availability import require
from mambaout.export.engines import openvino_core


def quantize_onnx(fp32_path: str | Path, int8_path: str | Path, calibration: np.ndarray, batch: int = 4) -> Path:
    """Write an int8 (QDQ) copy of an ONNX model, calibrated on `calibration` (N, 3, H, W) float32 images."""
    require("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, input_name: str):
            self.batches = iter([{input_name: calibration[i : i + batch]} for i in range(0, len(calibration), batch)])

        def get_next(self):
            return next(self.batches, None)

    ort = require("onnxruntime")
    input_name = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,  # 7-bit weights: no int16 saturation on CPUs without VNNI (module docstring)
        )
    return int8_path


def quantize_openvino(fp32_path: str | Path, int8_path: str | Path, calibration: np.ndarray) -> Path:
    """Write an int8 copy of an OpenVINO IR (or ONNX) model with NNCF, calibrated on `calibration` images.

    The int8 IR keeps a dynamic batch but takes the calibration images' height and width as fixed: NNCF's quantized
    graph fails at other spatial sizes (a DequantizationSubtract shape mismatch, seen with 64x64 calibration run at
    224x224), so the size is stated in the IR instead of failing deep inside OpenVINO.
    """
    ov = require("openvino")
    nncf = require("nncf")
    model = openvino_core().read_model(str(fp32_path))
    height, width = calibration.shape[-2:]
    model.reshape({model.input(0).get_any_name(): ov.PartialShape([-1, calibration.shape[1], height, width])})
    dataset = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    # 7-bit weights in every layer, not only the first (NNCF's default): CPUs without VNNI saturate otherwise
    advanced = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.ENABLE)
    quantized = nncf.quantize(model, dataset, subset_size=len(calibration), advanced_parameters=advanced)
    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(int8_path), compress_to_fp16=False)
    return int8_path
