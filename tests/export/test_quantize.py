"""Int8 post-training quantization: the engines' own tools, calibrated on built-in or user images, right on CPUs with
and without VNNI.

The error bounds hold on both kinds of x86 CPU, measured on mambaout_pico at 64 x 64 with 16 digits, model seeds 0-4,
1 and 2 threads, on an AMD EPYC with AVX-512 VNNI, capped at AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, which OpenVINO honours;
ONNX Runtime does not) and under QEMU as a Haswell (AVX2, no VNNI; both engines then run their AVX2 kernels), logits'
relative error to fp32 (seed 0 is the tests' model):

| | VNNI | AVX2 |
|---|---:|---:|
| ONNX Runtime, 7-bit weights (`reduce_range`) | 0.035-0.058 | 0.035-0.058 |
| ONNX Runtime, 8-bit weights | 0.035-0.048 | seed 0: 0.127 |
| OpenVINO, 7-bit weights (`OverflowFix.ENABLE`) | 0.046-0.078 | 0.046-0.078 |
| OpenVINO, 8-bit weights but the first layer (NNCF's default) | 0.041-0.075 | 0.098-0.201, seed 0: 0.490 |

Measured again once the export graph held the blocks without split and concat (2-core Intel Xeon with VNNI, seeds
0-4, 7-bit weights): ONNX Runtime 0.035-0.060, OpenVINO 0.046-0.077, OpenVINO capped at AVX2 the same to three
digits (ONNX Runtime ignores the cap).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mambaout.errors import UserError
from mambaout.export.calibration import calibration_images
from mambaout.export.engines import load_engine, relative_error
from mambaout.export.quantize import quantize_onnx, quantize_openvino


def test_digits_calibration_is_normalised_images_at_the_export_size():
    images = calibration_images("digits", (64, 48), count=8)
    assert images.shape == (8, 3, 64, 48) and images.dtype == np.float32
    # digits are dark backgrounds with bright strokes: ImageNet-normalised black is about -2.1 (red channel)
    assert images.min() == pytest.approx((0 - 0.485) / 0.229, abs=0.01)
    assert 0.5 < images.max() < 2.7


def test_folder_calibration_reads_every_image_and_rejects_an_empty_folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    assert calibration_images(tmp_path, (32, 32)).shape == (3, 3, 32, 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no images"):
        calibration_images(tmp_path / "empty", (32, 32))
    with pytest.raises(UserError, match="neither 'digits' nor a folder"):
        calibration_images(tmp_path / "missing", (32, 32))


# CPUs without VNNI multiply uint8 activations by int8 weights with vpmaddubsw, which adds each pair of products in
# int16: 2 x 255 x 64 = 32640 still fits, 2 x 255 x 127 saturates.
NO_VNNI_WEIGHT_LIMIT = 64
ORT_INT8_BOUND = 0.09  # 7-bit weights: at most 0.060 on either CPU
OPENVINO_INT8_BOUND = 0.12  # 7-bit weights: at most 0.078 on either CPU; default NNCF on AVX2: 0.49


def _int8_error(engine_name, path, model_path, images):
    fp32, int8 = load_engine(engine_name, model_path)(images)[0], load_engine(engine_name, path)(images)[0]
    return relative_error(int8, fp32)


def _openvino_weights(model) -> list[np.ndarray]:
    """The int8 weights of every Convolution and MatMul (depthwise GroupConvolutions widen to int32 on any CPU)."""
    weights = []
    for op in model.get_ops():
        if op.get_type_name() in ("Convolution", "MatMul"):
            node = op.input_value(1).get_node()
            while node.get_type_name() in ("Multiply", "Subtract", "Convert", "Reshape", "Transpose"):
                node = node.input_value(0).get_node()  # the dequantisation chain: int8 constant -> f32 weights
            if node.get_type_name() == "Constant" and node.get_element_type().get_type_name() == "i8":
                weights.append(node.get_data())
    return weights


def test_onnxruntime_int8_is_a_qdq_graph_close_to_fp32(exported, tmp_path):
    import onnx

    _, onnx_path, _ = exported("conv", False)
    images = calibration_images("digits", (64, 64), count=16)
    int8 = quantize_onnx(onnx_path, tmp_path / "int8.onnx", images)
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert ops.count("QuantizeLinear") >= 20 and ops.count("DequantizeLinear") >= 20
    assert 1e-4 < _int8_error("onnxruntime", int8, onnx_path, images) < ORT_INT8_BOUND  # quantized, still the model


def test_onnxruntime_int8_weights_fit_in_7_bits_for_cpus_without_vnni(exported, tmp_path):
    import onnx
    from onnx import numpy_helper

    _, onnx_path, _ = exported("conv", False)
    int8 = quantize_onnx(onnx_path, tmp_path / "int8.onnx", calibration_images("digits", (64, 64), count=8))
    initializers = onnx.load(str(int8)).graph.initializer
    weights = [
        numpy_helper.to_array(t) for t in initializers if t.data_type == onnx.TensorProto.INT8 and len(t.dims) > 1
    ]
    assert len(weights) >= 20  # pico: 25 convolutions and matmuls (the int8 zero points are vectors)
    assert max(np.abs(w.astype(np.int32)).max() for w in weights) <= NO_VNNI_WEIGHT_LIMIT


def test_openvino_int8_has_fake_quantize_nodes_and_stays_close_to_fp32(exported, tmp_path):
    import openvino as ov

    _, _, xml_path = exported("conv", False)
    images = calibration_images("digits", (64, 64), count=16)
    int8 = quantize_openvino(xml_path, tmp_path / "int8.xml", images)
    ops = [op.get_type_name() for op in ov.Core().read_model(str(int8)).get_ops()]
    assert ops.count("FakeQuantize") >= 10
    assert 1e-4 < _int8_error("openvino", int8, xml_path, images) < OPENVINO_INT8_BOUND


def test_openvino_int8_weights_fit_in_7_bits_in_every_layer(exported, tmp_path):
    import openvino as ov

    _, _, xml_path = exported("conv", False)
    int8 = quantize_openvino(xml_path, tmp_path / "int8.xml", calibration_images("digits", (64, 64), count=8))
    weights = _openvino_weights(ov.Core().read_model(str(int8)))
    assert len(weights) >= 15  # pico: 2 stem and 3 downsampling convolutions, 12 block and 2 head matmuls
    assert max(np.abs(w.astype(np.int32)).max() for w in weights) <= NO_VNNI_WEIGHT_LIMIT


_CAPPED_RUN = """
import sys
import numpy as np
from mambaout.export.engines import load_engine, relative_error
images = np.load(sys.argv[3])
print(relative_error(load_engine("openvino", sys.argv[2])(images)[0], load_engine("openvino", sys.argv[1])(images)[0]))
"""


def test_openvino_int8_stays_close_to_fp32_on_a_cpu_without_vnni(exported, tmp_path):
    # OpenVINO's oneDNN reads ONEDNN_MAX_CPU_ISA once per process: capped at AVX2 it runs a VNNI-less CPU's kernels
    _, _, xml_path = exported("conv", False)
    images = calibration_images("digits", (64, 64), count=16)
    int8 = quantize_openvino(xml_path, tmp_path / "int8.xml", images)
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    args = [sys.executable, "-c", _CAPPED_RUN, str(xml_path), str(int8), str(tmp_path / "images.npy")]
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert 1e-4 < float(run.stdout.split()[-1]) < OPENVINO_INT8_BOUND


def test_openvino_int8_keeps_a_dynamic_batch_at_the_calibration_size(exported, tmp_path):
    import openvino as ov

    _, _, xml_path = exported("conv", False)
    images = calibration_images("digits", (64, 64), count=8)
    int8 = quantize_openvino(xml_path, tmp_path / "int8.xml", images)
    shape = ov.Core().read_model(str(int8)).input(0).get_partial_shape()
    assert shape[0].is_dynamic and [d.get_length() for d in list(shape)[1:]] == [3, 64, 64]
    assert _int8_error("openvino", int8, xml_path, images[:3]) < OPENVINO_INT8_BOUND  # another batch size runs
    engine = load_engine("openvino", int8)
    with pytest.raises(UserError, match=r"takes input of shape .* not \(1, 3, 48, 80\).*--image-size"):
        engine(np.zeros((1, 3, 48, 80), np.float32))
    fp32 = load_engine("openvino", xml_path)(images[:2])[0]
    assert relative_error(engine(images[:2])[0], fp32) < OPENVINO_INT8_BOUND  # the refused call cost it nothing
